"""Events the portal's identity layer announces to the apps above it.

The portal is the lowest layer: it never imports imaging, rcp or expertise. When something
they act on happens here (an establishment admits a patient), the portal sends a signal,
on commit, and the app that reacts connects a receiver in its AppConfig.ready.
"""

from django.dispatch import Signal

# An establishment registered or admitted ``patient`` (HL7 ADT A01, A04 or A05): imaging
# sends the patient's priors from the other establishments to that establishment's PACS.
# Sent with: patient (portal.models.Patient), establishment (Establishment), trigger ("A01"…).
patient_admitted = Signal()
