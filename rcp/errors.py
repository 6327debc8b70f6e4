"""What the RCP's rules refuse, raised by its services and permissions (and caught by views).

Kept apart from the services so that any module of the app (documents, notifications, key
images) can refuse without importing the services.
"""


class RcpError(Exception):
    """A request the rules refuse; the message is for the user."""


class StaleEdit(RcpError):
    """Somebody else saved in between: the form must be reloaded, nothing was written."""


class NotAllowed(RcpError):
    """The actor may not do this (see rcp.permissions): nothing was written."""
