"""The RCP's pages, one module per subject; rcp/urls.py routes them all.

Thin views over rcp.services and rcp.selectors, every one that takes an id through the access
helpers of rcp.access (outsiders get 404).
"""
