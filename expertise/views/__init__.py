"""The tele-expertise pages, one module per subject; expertise/urls.py routes them all.

Thin views over expertise.services and expertise.selectors, every one that takes a request id
through expertise.access.get_request_for_user (outsiders get 404).
"""
