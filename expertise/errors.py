"""What tele-expertise's rules refuse, raised by its services and permissions (and caught by
views), kept apart from the services so that any module of the app can refuse without them."""


class ExpertiseError(Exception):
    """A request the rules refuse; the message is for the user."""


class StaleEdit(ExpertiseError):
    """Somebody else saved in between: nothing was written."""


class NotAllowed(ExpertiseError):
    """The actor may not do this (see expertise.permissions): nothing was written."""


class SignatureRefused(ExpertiseError):
    """The password (or the second factor's code) given as the signature is wrong."""
