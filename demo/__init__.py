"""The demo: synthetic studies, each domain's demo data and the commands that seed and run it.

Kept out of the production apps, which never import it: it sits above them all
(tests/test_layers.py).
"""
