"""The FRCP value sets as the coordinator filling in a fiche RCP would meet them.

Expected codes and labels are copied by hand from the published tables (frcp.md §4 and its
appendices). The cross-check against frcp.md reads the copy kept with the tests
(tests/fixtures/reference/frcp.md, public ANS reference text), so it runs everywhere; where the
shared reference sits beside the repository, the copy must match it, so that drift is caught.
"""

import re
from importlib import resources
from pathlib import Path

import pytest
from django import forms

from rcp import frcp

FRCP_MD = Path(__file__).parent / "fixtures" / "reference" / "frcp.md"
SHARED_FRCP_MD = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "frcp.md"


# --- Small value sets: what the form's drop-downs show ------------------------------------------


@pytest.mark.parametrize(
    ("value_set", "code", "label"),
    [
        (frcp.NATURE_DISCUSSION, "ORG-117", "RCP Appareil - Organes"),
        (frcp.NATURE_DISCUSSION, "ORG-132", "RCP Transversale et de soins de support"),
        (frcp.APPAREIL, "81745001", "œil"),
        (frcp.APPAREIL, "312419003", "appareil respiratoire et/ou cavité thoracique"),
        (frcp.ORGANE, "MED-255", "Trachée, Bronches, Poumon"),
        (frcp.ORGANE, "C88", "Maladies immunoprolifératives malignes"),
        (frcp.ORGANE, "C12664", "Péritoine-rétropéritoine"),
        (frcp.TRAITEMENT_SOINS, "ORG-130", "Oncogériatrie"),
        (frcp.TRAITEMENT_SOINS, "C71326", "préservation de la fertilité"),
        (frcp.STATUT_CAS, "ORG-128", "Cas enregistré"),
        (frcp.STATUT_CAS, "ORG-134", "Cas discuté"),
        (frcp.PHASE, "MED-268", "Phase initiale du cancer"),
        (frcp.PHASE, "MED-244", "Rechute du cancer"),
        (frcp.OMS, "MED-240", "Echelle de performance OMS Stade 0"),
        (frcp.OMS, "MED-267", "Echelle de performance OMS Stade 4"),
        (
            frcp.OMS_INTERPRETATION,
            "LA9626-8",
            "Incapable de prendre soins de soi-même. Alité ou en chaise en permanence",
        ),
        (frcp.TYPE_TRAITEMENT, "C15632", "chimiothérapie"),
        (frcp.TYPE_TRAITEMENT, "GEN-092.03.01", "Autre(s) traitement(s)"),
        (frcp.STATUT_QUORUM, "ORG-126", "Quorum atteint"),
        (frcp.STATUT_QUORUM, "GEN-010", "Ne sait pas"),
        (frcp.STATUT_DOC, "9571008", "approuvé"),
        (frcp.MODIFICATEUR_TOPOGRAPHIQUE, "24028007", "droit"),
        (frcp.FUNCTION_CODE, "PCP", "Médecin traitant"),
        (frcp.CONFIDENTIALITY, "N", "Normal"),
    ],
)
def test_known_codes_show_their_published_french_label(value_set, code, label):
    assert code in value_set
    assert value_set.label(code) == label
    assert value_set.get(code).label == label


@pytest.mark.parametrize(
    ("value_set", "name", "oid", "count"),
    [
        (frcp.NATURE_DISCUSSION, "JDV_NatureDiscussion_CISIS", "1.2.250.1.213.1.1.4.2.281.8", 2),
        (frcp.APPAREIL, "JDV_RCP_Appareil_CISIS", "1.2.250.1.213.1.1.5.597", 14),
        (frcp.ORGANE, "JDV_RCP_Organe_CISIS", "1.2.250.1.213.1.1.5.598", 57),
        (frcp.TRAITEMENT_SOINS, "JDV_TraitementSoins_FRCP_CISIS", "1.2.250.1.213.1.1.5.596", 10),
        (frcp.STATUT_CAS, "JDV_StatutCasPresente_CISIS", "1.2.250.1.213.1.1.4.2.281.17", 2),
        (frcp.PHASE, "JDV_PhaseCancer_CISIS", "1.2.250.1.213.1.1.4.2.281.13", 2),
        (frcp.OMS, "JDV_OMSEchPerf_CISIS", "1.2.250.1.213.1.1.4.2.281.1", 5),
        (frcp.OMS_INTERPRETATION, "JDV_OMSInterpret_CISIS", "1.2.250.1.213.1.1.4.2.281.2", 5),
        (frcp.TYPE_TRAITEMENT, "JDV_TypeTraitement_FRCP_CISIS", "1.2.250.1.213.1.1.5.595", 18),
        (frcp.STATUT_QUORUM, "JDV_StatutQuorum_CISIS", "1.2.250.1.213.1.1.4.2.281.16", 3),
        (frcp.STATUT_DOC, "JDV_StatutDoc_CISIS", "1.2.250.1.213.1.1.5.93", 4),
        (
            frcp.MODIFICATEUR_TOPOGRAPHIQUE,
            "JDV_ModificateurTopographique_CISIS",
            "1.2.250.1.213.1.1.5.688",
            46,
        ),
        (frcp.FUNCTION_CODE, "JDV_J47_FunctionCode_CISIS", "1.2.250.1.213.1.1.5.124", 10),
        (
            frcp.CONFIDENTIALITY,
            "JDV_J08_XdsConfidentialityCode_CISIS",
            "1.2.250.1.213.1.1.5.463",
            6,
        ),
        (frcp.LATERALITE, "JDV_Lateralite_CISIS", "1.2.250.1.213.1.1.5.160", 4),
    ],
)
def test_value_sets_carry_their_published_identity_and_size(value_set, name, oid, count):
    assert (value_set.name, value_set.oid, len(value_set)) == (name, oid, count)


def test_choices_keep_the_published_order_for_the_drop_down():
    assert frcp.OMS.choices()[0] == ("MED-240", "Echelle de performance OMS Stade 0")
    assert [code for code, _ in frcp.OMS.choices()] == [
        "MED-240",
        "MED-264",
        "MED-265",
        "MED-266",
        "MED-267",
    ]
    assert frcp.TYPE_TRAITEMENT.choices()[0] == ("387713003", "intervention chirurgicale")
    assert frcp.TYPE_TRAITEMENT.choices()[-1] == ("C15252", "soins palliatifs")


def test_a_django_choice_field_accepts_a_case_status_and_refuses_an_unknown_code():
    field = forms.ChoiceField(choices=frcp.STATUT_CAS.choices())
    assert field.clean(frcp.CASE_REGISTERED) == "ORG-128"
    assert field.clean(frcp.CASE_DISCUSSED) == "ORG-134"
    with pytest.raises(forms.ValidationError):
        field.clean("ORG-999")


def test_an_unknown_code_has_no_concept_and_no_label():
    assert "ORG-999" not in frcp.STATUT_CAS
    assert frcp.STATUT_CAS.get("ORG-999") is None
    with pytest.raises(KeyError):
        frcp.STATUT_CAS.label("ORG-999")


def test_organs_keep_each_their_own_code_system_for_the_cda():
    # The organ list mixes four terminologies; a single system per value set would be wrong.
    systems = {
        code: frcp.ORGANE.get(code).system for code in ("MED-255", "C88", "C3211", "76752008")
    }
    assert systems == {
        "MED-255": frcp.TA_ASIP,
        "C88": frcp.CIM_10,
        "C3211": frcp.NCIT,
        "76752008": frcp.SNOMED_CT,
    }


def test_the_oms_grade_gives_its_interpretation_as_in_the_official_example():
    assert frcp.OMS_INTERPRETATION_BY_GRADE["MED-240"] == "LA9622-7"
    assert frcp.OMS_INTERPRETATION_BY_GRADE["MED-267"] == "LA9626-8"
    assert frcp.OMS_GRADE["MED-265"] == 2


def test_fixed_codes_of_the_document_and_of_the_rcp_act():
    document = frcp.DOCUMENT_TYPE
    assert (document.code, document.label, document.system) == (
        "34794-8",
        "CR de réunion de concertation pluridisciplinaire",
        "2.16.840.1.113883.6.1",
    )
    act = frcp.RCP_ACT
    assert (act.code, act.label, act.system) == (
        "39",
        "Réunion de Concertation Pluridisciplinaire (RCP)",
        "1.2.250.1.213.3.3.13",
    )
    assert (frcp.OBS_TNM_T.code, frcp.OBS_TNM_N.code, frcp.OBS_TNM_M.code) == (
        "21905-5",
        "21906-3",
        "21907-1",
    )
    assert frcp.OBS_TNM_STAGE.code == "75620-5"


# --- Appendices: topography and morphology ------------------------------------------------------


def test_topography_is_the_complete_cim10_list():
    topography = frcp.TOPOGRAPHY
    assert (topography.name, topography.oid) == (
        "JDV_Tumeur_CISIS",
        "1.2.250.1.213.1.1.4.2.281.21",
    )
    assert len(topography) == 724
    assert topography.label("C34.1") == "Tumeur maligne du lobe supérieur, bronches ou poumon"
    assert topography.label("C18.9+0") == "Syndrome de Lynch"
    assert topography.get("C50.9").system == "2.16.840.1.113883.6.3"
    assert frcp.topography_label("C61") == "Tumeur maligne de la prostate"
    assert frcp.topography_label("C99") is None


def test_topography_keeps_the_published_duplicate_label_of_c00_0_and_c00_1():
    # frcp.md §5 item 7: the ANS file labels both "lèvre supérieure"; only the code is checked.
    assert frcp.TOPOGRAPHY.label("C00.0") == frcp.TOPOGRAPHY.label("C00.1")


def test_morphology_is_the_complete_cim_o_3_list():
    morphology = frcp.MORPHOLOGY
    assert (morphology.name, morphology.oid) == ("JDV_Morphologie_CISIS", "1.2.250.1.213.1.1.5.585")
    assert len(morphology) == 1032
    assert morphology.label("8140/3") == "Adénocarcinome, SAI"
    assert morphology.label("8070/3") == "Carcinome épidermoïde, SAI"
    assert morphology.get("8140/3").system == "2.16.840.1.113883.6.43.1"
    assert frcp.morphology_label("9680/3") == "Lymphome malin diffus à grandes cellules B, SAI"
    assert frcp.morphology_label("8140/4") is None


def test_the_appendices_are_read_once_and_ship_inside_the_package():
    assert frcp.TOPOGRAPHY is frcp.topography() is frcp.topography()
    data = resources.files("rcp").joinpath("data")
    for filename in (frcp.TOPOGRAPHY_FILE, frcp.MORPHOLOGY_FILE):
        assert data.joinpath(filename).is_file()


# --- Autocomplete ---------------------------------------------------------------------------------


def codes(concepts):
    return [concept.code for concept in concepts]


def test_typing_a_code_prefix_lists_the_codes_under_it_in_order():
    assert codes(frcp.search_topography("C50", limit=3)) == ["C50", "C50.0", "C50.1"]
    assert codes(frcp.search_topography("c509")) == ["C50.9"]
    assert codes(frcp.search_topography("C16.9")) == ["C16.9", "C16.9+0", "C16.9+8"]
    assert codes(frcp.search_morphology("8140")) == [
        "8140/0",
        "8140/1",
        "8140/2",
        "8140/3",
        "8140/6",
    ]
    assert codes(frcp.search_morphology("81403")) == ["8140/3"]


def test_typing_words_without_accents_finds_the_accented_label():
    assert "C25" in codes(frcp.search_topography("pancreas"))
    assert "C00.0" in codes(frcp.search_topography("levre sup"))
    assert "8140/3" in codes(frcp.search_morphology("adenocarcinome"))
    assert codes(frcp.search_morphology("adenocarcinome canalaire infil")) == ["8500/3"]


def test_ligatures_and_apostrophes_do_not_get_in_the_way():
    assert "8720/0" in codes(frcp.search_morphology("naevus pigmentaire"))
    assert codes(frcp.ORGANE.search("oesophage")) == ["32849002"]
    # C16.9+0 is written with a typographic apostrophe, the keyboard types a straight one.
    assert codes(frcp.search_topography("l'estomac cdh")) == ["C16.9+0"]


def test_search_is_bounded_and_empty_queries_find_nothing():
    assert len(frcp.search_morphology("carcinome", limit=20)) == 20
    assert frcp.search_topography("") == []
    assert frcp.search_topography("   ") == []
    assert frcp.search_topography("poumon", limit=0) == []
    assert frcp.search_topography("xylophone") == []


def test_letters_alone_are_not_read_as_a_code():
    # "med" must find médiastin by its label, not every MED-xxx code of the organ list.
    assert codes(frcp.ORGANE.search("med")) == ["72410000"]


# --- TNM ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["T1b", "TX", "Tx", "T0", "Tis", "Tis(DCIS)", "Tis (Paget)", "Ta", "T1mi", "T2", "T3a", "T4d"]
    + ["T1a2", "T1c3", "T2(m)", " t1B "],
)
def test_t_accepts_uicc_categories(value):
    assert frcp.valid_t(value)


@pytest.mark.parametrize(
    "value", ["", "T", "T5", "T1e", "T2mi", "pT2", "cT1b", "T0(m)", "N1", "1b", None]
)
def test_t_refuses_what_is_not_a_primary_tumour_category(value):
    assert not frcp.valid_t(value)


@pytest.mark.parametrize(
    "value",
    ["N0", "NX", "nx", "N1", "N1mi", "N2a", "N2c", "N3c", "N0(i+)", "N0(mol-)", "N0(sn)", "N1(f)"],
)
def test_n_accepts_uicc_categories(value):
    assert frcp.valid_n(value)


@pytest.mark.parametrize("value", ["", "N4", "N2d", "N2mi", "N1(i+)", "pN1", "T1", None])
def test_n_refuses_what_is_not_a_regional_node_category(value):
    assert not frcp.valid_n(value)


@pytest.mark.parametrize(
    "value", ["M0", "M1", "M1a", "M1b", "M1c", "M1d", "M0(i+)", "M1(PUL)", "M1(pul, oss)"]
)
def test_m_accepts_uicc_categories(value):
    assert frcp.valid_m(value)


@pytest.mark.parametrize("value", ["MX", "Mx", "M2", "M1e", "pM1", "M1(XYZ)", "", None])
def test_m_refuses_mx_removed_in_the_seventh_edition_and_other_non_categories(value):
    assert not frcp.valid_m(value)


def test_typed_categories_are_normalised_to_the_uicc_spelling():
    assert frcp.normalize_tnm(" t1B ") == "T1b"
    assert frcp.normalize_tnm("tis (dcis)") == "Tis(DCIS)"
    assert frcp.normalize_tnm("n0(I+)(SN)") == "N0(i+)(sn)"
    assert frcp.normalize_tnm("m1(pul,oss)") == "M1(PUL,OSS)"
    assert frcp.normalize_tnm("pT2") == "pT2"


def test_prefixes_offer_clinical_pathological_post_treatment_and_recurrence():
    assert [code for code, _ in frcp.TNM_PREFIXES] == ["c", "p", "yc", "yp", "rc", "rp"]


# --- Cross-check against the reference document -------------------------------------------------


def reference_tables():
    """{value-set name: [(code, label), ...]} read from frcp.md, independently of rcp.frcp."""
    tables: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in FRCP_MD.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            match = re.search(r"(JDV_\w+)", line)
            current = match.group(1) if match else None
            continue
        row = re.match(r"\| (?:\d+ \| )?`([^`]+)` \| (.+?) \|", line)
        if current and row:
            tables.setdefault(current, []).append(row.groups())
    return tables


def test_every_value_set_matches_frcp_md_code_for_code():
    tables = reference_tables()
    value_sets = [
        frcp.NATURE_DISCUSSION,
        frcp.APPAREIL,
        frcp.ORGANE,
        frcp.TRAITEMENT_SOINS,
        frcp.STATUT_CAS,
        frcp.PHASE,
        frcp.OMS,
        frcp.OMS_INTERPRETATION,
        frcp.TYPE_TRAITEMENT,
        frcp.STATUT_QUORUM,
        frcp.STATUT_DOC,
        frcp.MODIFICATEUR_TOPOGRAPHIQUE,
        frcp.FUNCTION_CODE,
        frcp.CONFIDENTIALITY,
        frcp.TOPOGRAPHY,
        frcp.MORPHOLOGY,
    ]
    for value_set in value_sets:
        assert value_set.choices() == tables[value_set.name], value_set.name
    assert len(tables["JDV_Tumeur_CISIS"]) == len(frcp.TOPOGRAPHY) == 724
    assert len(tables["JDV_Morphologie_CISIS"]) == len(frcp.MORPHOLOGY) == 1032


@pytest.mark.skipif(
    not SHARED_FRCP_MD.is_file(), reason="no shared reference beside the repository"
)
def test_the_kept_copy_of_frcp_md_is_the_shared_reference():
    """The check above reads the copy; a newer shared reference must be copied in (and the
    value sets checked against it again)."""
    assert FRCP_MD.read_bytes() == SHARED_FRCP_MD.read_bytes(), (
        f"{FRCP_MD} differs from {SHARED_FRCP_MD}: copy the reference in and rerun this file"
    )


@pytest.mark.parametrize("typed", ["T2a", "2a", "cT2a", "pT2a", "t2a", " T 2 a ", "c T2a", "ypT2a"])
def test_the_usual_spellings_of_a_t_category_read_as_the_stored_t2a(typed):
    prefix, category = frcp.read_tnm(typed, "T")
    assert category == "T2a" and prefix in ("", "c", "p", "yp")


def test_a_typed_prefix_is_split_off_and_the_axis_letter_may_be_left_out():
    assert frcp.read_tnm("pN1mi", "N") == ("p", "N1mi")
    assert frcp.read_tnm("0", "M") == ("", "M0")
    assert frcp.read_tnm("x", "N") == ("", "NX")
    assert frcp.read_tnm("is", "T") == ("", "Tis")
    assert frcp.read_tnm("  ", "T") == ("", "")


@pytest.mark.parametrize(
    ("typed", "axis"), [("T9", "T"), ("N1", "T"), ("MX", "M"), ("c", "T"), ("yT2", "T")]
)
def test_what_is_no_category_of_the_field_s_axis_is_not_read(typed, axis):
    assert frcp.read_tnm(typed, axis) is None
