"""Routes of the portal's DICOMweb service (PS3.18 §10), mounted at /dicomweb/."""

from django.urls import path, register_converter

from imaging import dicomweb


class UidConverter:
    regex = r"[0-9]+(?:\.[0-9]+)*"

    def to_python(self, value):
        return value

    def to_url(self, value):
        return value


class FrameListConverter:
    regex = r"[0-9]+(?:,[0-9]+)*"

    def to_python(self, value):
        return value

    def to_url(self, value):
        return value


register_converter(UidConverter, "uid")
register_converter(FrameListConverter, "frames")

STUDY = "studies/<uid:study_uid>"
SERIES = f"{STUDY}/series/<uid:series_uid>"
INSTANCE = f"{SERIES}/instances/<uid:sop_uid>"

urlpatterns = [
    path("studies", dicomweb.studies_root, name="dicomweb-studies"),
    path(STUDY, dicomweb.study_root, name="dicomweb-study"),
    path(f"{STUDY}/metadata", dicomweb.study_metadata, name="dicomweb-study-metadata"),
    path(f"{STUDY}/thumbnail", dicomweb.thumbnail, name="dicomweb-study-thumbnail"),
    path(f"{STUDY}/series", dicomweb.search_series, name="dicomweb-study-series"),
    path(f"{STUDY}/instances", dicomweb.search_instances, name="dicomweb-study-instances"),
    path(SERIES, dicomweb.retrieve, name="dicomweb-series"),
    path(f"{SERIES}/metadata", dicomweb.study_metadata, name="dicomweb-series-metadata"),
    path(f"{SERIES}/rendered", dicomweb.rendered_series, name="dicomweb-series-rendered"),
    path(f"{SERIES}/thumbnail", dicomweb.thumbnail, name="dicomweb-series-thumbnail"),
    path(f"{SERIES}/instances", dicomweb.search_instances, name="dicomweb-series-instances"),
    path(INSTANCE, dicomweb.retrieve, name="dicomweb-instance"),
    path(f"{INSTANCE}/metadata", dicomweb.study_metadata, name="dicomweb-instance-metadata"),
    path(f"{INSTANCE}/rendered", dicomweb.rendered, name="dicomweb-instance-rendered"),
    path(f"{INSTANCE}/thumbnail", dicomweb.thumbnail, name="dicomweb-instance-thumbnail"),
    path(
        f"{INSTANCE}/frames/<frames:frame_list>", dicomweb.retrieve_frames, name="dicomweb-frames"
    ),
    path(
        f"{INSTANCE}/frames/<frames:frame_list>/rendered",
        dicomweb.rendered,
        name="dicomweb-frames-rendered",
    ),
]
