"""``manage.py demo_dicom OUT_DIR``: a CT series of a demo patient, ready for ``storescu``.

The files name the patient as the sending establishment's PACS would: its IPP in PatientID
(0010,0020) and the establishment's issuer in IssuerOfPatientID (0010,0021), which is how
the gateway's ingest finds the regional patient (PS3.3 C.7.1.1). Each run makes a new study
(new StudyInstanceUID), so a second send shows a second study in the dossier.
"""

import datetime as dt
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from pydicom.uid import generate_uid

from demo import synthetic
from demo.imaging import DEMO_DECLARATIONS, demo_patient
from portal.models import Establishment, PatientIdentifier

DEFAULT_FINESS = "180000028"  # CH de Bourges, calling AE title CHB_DEMO in the demo


class Command(BaseCommand):
    help = "Writes a synthetic CT series of a demo patient, to send to the DICOM gateway."

    def add_arguments(self, parser):
        parser.add_argument("out_dir", help="folder to write the .dcm files into")
        parser.add_argument(
            "--finess",
            default=DEFAULT_FINESS,
            help="the sending establishment, whose IPP the files carry (default: CH Bourges)",
        )
        parser.add_argument("--ipp", help="the patient's IPP there (default: the demo patient)")
        parser.add_argument("--slices", type=int, default=20)

    def handle(self, *args, out_dir, finess, ipp, slices, **options):
        establishment = Establishment.objects.filter(finess=finess).first()
        if establishment is None:
            raise CommandError(f"No establishment with FINESS {finess}: run seed_demo first.")
        identifiers = PatientIdentifier.objects.select_related("patient").filter(
            establishment=establishment
        )
        if ipp:
            identifier = identifiers.filter(value=ipp).first()
        else:
            patient = demo_patient()
            identifier = identifiers.filter(patient=patient).first() if patient else None
        if identifier is None:
            raise CommandError(
                f"No such patient at {establishment.name}: the IPP must be one of its patients."
            )
        if not 1 <= slices <= 500:
            raise CommandError("--slices must be between 1 and 500.")
        patient = identifier.patient
        ins, oid = patient.ins_for_output() or ("", "")
        identity = synthetic.PatientIdentity(
            patient_id=identifier.value,
            issuer=establishment.patient_id_issuer,
            family_name=patient.birth_name.upper(),
            given_names=patient.first_names,
            sex={"I": "O"}.get(patient.sex, patient.sex),
            birth_date=patient.birth_date,
            ins=ins,
            ins_oid=oid,
        )
        today = timezone.localdate()
        spec = synthetic.StudySpec(
            study_date=today,
            institution_name=establishment.name,
            description="TDM thorax (envoi de démonstration)",
            accession_number=f"DEMO{dt.datetime.now(dt.UTC):%H%M%S}",
            study_instance_uid=generate_uid(),
        )
        datasets = synthetic.ct_series(
            patient=identity, study=spec, slices=slices, rows=256, columns=256
        )
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for index, dataset in enumerate(datasets, start=1):
            (folder / f"ct{index:03d}.dcm").write_bytes(synthetic.to_bytes(dataset))
        calling = next(
            (titles[0] for f, titles, _pacs in DEMO_DECLARATIONS if f == finess), "<declared AE>"
        )
        self.stdout.write(
            f"{len(datasets)} CT slices of {patient.display_name} "
            f"(PatientID {identifier.value}, issuer {establishment.patient_id_issuer}, "
            f"{establishment.name}) in {folder}/\n"
            f"StudyInstanceUID {spec.study_instance_uid}\n"
            f"Send them: storescu -aet {calling} -aec {settings.DICOM_GATEWAY_AE_TITLE} "
            f"127.0.0.1 {settings.DICOM_GATEWAY_PORT} {folder}/*.dcm"
        )
