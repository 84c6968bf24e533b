"""Tests for the cardiovascular rulesets (spec sections 9 to 11).

rules/atrial_fibrillation.yaml: CHA2DS2-VASc and the anticoagulation decision
by sex; rules/has_bled.yaml: HAS-BLED; rules/pulmonary_embolism.yaml: the Wells
score for PE. Each test evaluates one case at :data:`casebuilder.NOW` and checks
what a clinician would: the score, the points of each item, the recommendations
and their status, the reasons of blocks, and the rules that cannot be
determined with the facts they lack.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from casebuilder import (
    NOW,
    Readings,
    bp,
    case,
    creatinine,
    finding_ids,
    has_condition,
    lab,
    recommendation,
    recommendation_statuses,
    taking,
    undetermined,
    undetermined_ids,
)

from engine import (
    Assessment,
    Case,
    CodedEntry,
    Finding,
    KnowledgeBase,
    RuleFileError,
    read_input,
)
from engine import ruleformat as rf

MODELS = Path(__file__).resolve().parents[1] / "models"

AF_RECOMMENDATIONS = {
    "anticoagulation_recommended",
    "anticoagulation_reasonable",
    "anticoagulation_not_recommended",
    "doac_preferred",
    "warfarin_for_valvular_af",
    "switch_doac_to_warfarin",
    "antiplatelet_instead_of_anticoagulation",
}
AF_DECISION_RULES = {
    "af_oac_recommended",
    "af_oac_reasonable",
    "af_oac_not_recommended",
}
ANTICOAGULATION = {
    "anticoagulation_recommended",
    "anticoagulation_reasonable",
    "doac_preferred",
    "warfarin_for_valvular_af",
}
VALVE_REASON = (
    "mechanical heart valve or moderate-to-severe mitral stenosis: DOACs are "
    "contraindicated; use warfarin (Joglar 2024 section 6.3)"
)
ANTIPLATELET_REASON = (
    "aspirin, alone or with clopidogrel, is not a substitute for oral "
    "anticoagulation in AF: it prevents fewer strokes and bleeds about as much "
    "(Joglar 2024 sections 6.2-6.3); offer an oral anticoagulant when the "
    "CHA2DS2-VASc score calls for one"
)
D_DIMER_REASON = (
    "Wells above 4 (PE likely): a D-dimer alone cannot exclude PE; go to imaging (CTPA)"
)
CHA2DS2_VASC_ITEMS = (
    "heart_failure",
    "hypertension",
    "age",
    "diabetes",
    "stroke_tia_thromboembolism",
    "vascular_disease",
    "sex_female",
)
HAS_BLED_ITEMS = (
    "hypertension",
    "renal",
    "liver",
    "stroke",
    "bleeding",
    "labile_inr",
    "elderly",
    "drugs",
    "alcohol",
)
WELLS_ITEMS = (
    "dvt_signs",
    "pe_most_likely",
    "heart_rate",
    "immobilisation_or_surgery",
    "prior_dvt_pe",
    "haemoptysis",
    "malignancy",
)
WELLS_FINDINGS = {
    "wells_pe_low",
    "wells_pe_moderate",
    "wells_pe_high",
    "wells_pe_unlikely",
    "wells_pe_likely",
}
WELLS_RULES = {
    "wells_pe_three_tier_low",
    "wells_pe_three_tier_moderate",
    "wells_pe_three_tier_high",
    "wells_pe_two_tier_unlikely",
    "wells_pe_two_tier_likely",
}


# --- helpers ---------------------------------------------------------------


def evaluate(kb: KnowledgeBase, c: Case) -> Assessment:
    result = kb.evaluate(c, as_of=NOW)
    assert result.status == "complete", result.problems
    return result


def conditions(*names: str) -> list[CodedEntry]:
    return [has_condition(n) for n in names]


def drugs(*names: str) -> list[CodedEntry]:
    return [taking(n) for n in names]


def score(result: Assessment, sid: str) -> Finding:
    """The point-score finding with this id (fails the test when absent)."""
    found = [f for f in result.findings if f.id == sid]
    assert len(found) == 1, f"{sid} not shown: {finding_ids(result)}"
    return found[0]


def points(finding: Finding) -> dict[str, float | None]:
    """Item id to its points (None: cannot be determined)."""
    return {c.id: c.points for c in finding.components}


def af_recommendations(result: Assessment) -> dict[str, str]:
    return {
        k: v
        for k, v in recommendation_statuses(result).items()
        if k in AF_RECOMMENDATIONS
    }


def af_patient(
    *names: str,
    age: int | None = 50,
    sex: str | None = "male",
    medications: Iterable[CodedEntry] = (),
    parts: Iterable[Readings] = (),
) -> Case:
    """A patient with AF and the given problem-list conditions."""
    return case(
        *parts,
        age=age,
        sex=sex,
        conditions=conditions("atrial_fibrillation", *names),
        medications=medications,
    )


def with_allergy(c: Case, concept: str) -> Case:
    allergy = CodedEntry(concept=concept, system="local", code=concept)
    return c.model_copy(update={"allergies": (allergy,)})


# --- CHA2DS2-VASc: items ---------------------------------------------------


@pytest.mark.parametrize(
    ("age", "age_points"), [(64, 0.0), (65, 1.0), (74, 1.0), (75, 2.0)]
)
def test_cha2ds2_vasc_age_points_at_each_boundary(
    kb: KnowledgeBase, age: int, age_points: float
) -> None:
    found = score(evaluate(kb, af_patient(age=age)), "cha2ds2_vasc")
    assert points(found)["age"] == age_points
    assert found.value == age_points
    assert found.missing == []


@pytest.mark.parametrize(
    ("condition", "item", "item_points"),
    [
        ("heart_failure", "heart_failure", 1.0),
        ("hypertension", "hypertension", 1.0),
        ("diabetes", "diabetes", 1.0),
        ("stroke_tia_thromboembolism", "stroke_tia_thromboembolism", 2.0),
        ("vascular_disease", "vascular_disease", 1.0),
    ],
)
def test_cha2ds2_vasc_each_condition_scores_its_points(
    kb: KnowledgeBase, condition: str, item: str, item_points: float
) -> None:
    found = score(evaluate(kb, af_patient(condition, age=50)), "cha2ds2_vasc")
    expected = dict.fromkeys(CHA2DS2_VASC_ITEMS, 0.0) | {item: item_points}
    assert points(found) == expected
    assert found.value == item_points


@pytest.mark.parametrize(
    ("sex", "sex_points"),
    [("female", 1.0), ("male", 0.0), ("other", 0.0), ("unknown", 0.0)],
)
def test_cha2ds2_vasc_sex_point_only_for_women(
    kb: KnowledgeBase, sex: str, sex_points: float
) -> None:
    found = score(evaluate(kb, af_patient(age=50, sex=sex)), "cha2ds2_vasc")
    assert points(found)["sex_female"] == sex_points
    assert found.value == sex_points


def test_cha2ds2_vasc_maximum_is_9(kb: KnowledgeBase) -> None:
    everything = (
        "heart_failure",
        "hypertension",
        "diabetes",
        "stroke_tia_thromboembolism",
        "vascular_disease",
    )
    found = score(
        evaluate(kb, af_patient(*everything, age=80, sex="female")), "cha2ds2_vasc"
    )
    assert points(found) == {
        "heart_failure": 1.0,
        "hypertension": 1.0,
        "age": 2.0,
        "diabetes": 1.0,
        "stroke_tia_thromboembolism": 2.0,
        "vascular_disease": 1.0,
        "sex_female": 1.0,
    }
    assert found.value == 9.0
    assert found.range == (9.0, 9.0)


def test_cha2ds2_vasc_shown_only_with_atrial_fibrillation(kb: KnowledgeBase) -> None:
    result = evaluate(
        kb, case(age=80, sex="female", conditions=conditions("hypertension"))
    )
    assert "cha2ds2_vasc" not in finding_ids(result)
    assert af_recommendations(result) == {}
    assert not undetermined_ids(result) & AF_DECISION_RULES


# --- CHA2DS2-VASc: the decision by sex -------------------------------------


DECISIONS = [
    # sex, conditions, age, expected total, expected recommendation
    ("male", (), 50, 0.0, "anticoagulation_not_recommended"),
    ("male", ("hypertension",), 50, 1.0, "anticoagulation_reasonable"),
    ("male", (), 65, 1.0, "anticoagulation_reasonable"),
    ("male", ("hypertension",), 65, 2.0, "anticoagulation_recommended"),
    ("male", (), 75, 2.0, "anticoagulation_recommended"),
    ("female", (), 50, 1.0, "anticoagulation_not_recommended"),
    ("female", ("diabetes",), 50, 2.0, "anticoagulation_reasonable"),
    ("female", (), 65, 2.0, "anticoagulation_reasonable"),
    ("female", ("diabetes",), 65, 3.0, "anticoagulation_recommended"),
    ("female", (), 75, 3.0, "anticoagulation_recommended"),
]


@pytest.mark.parametrize(("sex", "names", "age", "total", "expected"), DECISIONS)
def test_anticoagulation_decision_by_sex(
    kb: KnowledgeBase,
    sex: str,
    names: tuple[str, ...],
    age: int,
    total: float,
    expected: str,
) -> None:
    result = evaluate(kb, af_patient(*names, age=age, sex=sex))
    assert score(result, "cha2ds2_vasc").value == total
    wanted = {expected: "recommended"}
    if expected != "anticoagulation_not_recommended":
        wanted["doac_preferred"] = "recommended"
    wanted["antiplatelet_instead_of_anticoagulation"] = "blocked"
    assert af_recommendations(result) == wanted
    assert not undetermined_ids(result) & AF_DECISION_RULES


def test_recommended_decision_is_strong_and_prefers_a_doac(kb: KnowledgeBase) -> None:
    result = evaluate(kb, af_patient("hypertension", age=65, sex="male"))
    rec = recommendation(result, "anticoagulation_recommended")
    assert (rec.strength, rec.certainty) == ("strong", 0.9)
    assert [r.rule_id for r in rec.evidence.rules] == ["af_oac_recommended"]
    doac = recommendation(result, "doac_preferred")
    assert (doac.status, doac.strength) == ("recommended", "strong")
    assert doac.evidence.findings == ["af_oac_candidate"]


@pytest.mark.parametrize(
    ("sex", "names", "age", "expected"),
    [
        ("other", (), 50, "anticoagulation_not_recommended"),
        ("other", ("hypertension",), 50, "anticoagulation_reasonable"),
        ("other", ("hypertension",), 65, "anticoagulation_recommended"),
        ("unknown", (), 50, "anticoagulation_not_recommended"),
        ("unknown", (), 70, "anticoagulation_reasonable"),
        ("unknown", (), 75, "anticoagulation_recommended"),
    ],
)
def test_sex_other_or_unknown_uses_the_thresholds_without_the_sex_point(
    kb: KnowledgeBase, sex: str, names: tuple[str, ...], age: int, expected: str
) -> None:
    result = evaluate(kb, af_patient(*names, age=age, sex=sex))
    statuses = af_recommendations(result)
    assert statuses[expected] == "recommended"
    assert {k for k, v in statuses.items() if v == "recommended"} - {
        "doac_preferred"
    } == {expected}
    assert not undetermined_ids(result) & AF_DECISION_RULES


# --- CHA2DS2-VASc: missing inputs (spec 0.4) -------------------------------


def test_sex_not_recorded_leaves_the_score_and_decision_undetermined(
    kb: KnowledgeBase,
) -> None:
    # 1 point without the sex point: a man would score 1, a woman 2.
    result = evaluate(kb, af_patient(age=70, sex=None))
    found = score(result, "cha2ds2_vasc")
    assert found.value is None
    assert found.range == (1.0, 2.0)
    assert found.missing == ["sex"]
    assert points(found)["sex_female"] is None
    assert AF_DECISION_RULES <= undetermined_ids(result)
    for rule_id in AF_DECISION_RULES:
        assert undetermined(result, rule_id).missing == ["sex"]
    assert undetermined(result, "af_doac_preferred").missing == ["sex"]
    assert af_recommendations(result) == {
        "antiplatelet_instead_of_anticoagulation": "blocked"
    }


def test_sex_not_recorded_with_3_other_points_is_recommended(
    kb: KnowledgeBase,
) -> None:
    # Age 75 (2) and hypertension (1): 3 or 4 whatever the sex.
    result = evaluate(kb, af_patient("hypertension", age=75, sex=None))
    assert score(result, "cha2ds2_vasc").range == (3.0, 4.0)
    assert af_recommendations(result)["anticoagulation_recommended"] == "recommended"
    assert not undetermined_ids(result) & AF_DECISION_RULES


def test_age_unknown_cannot_decide_a_man_with_hypertension(kb: KnowledgeBase) -> None:
    result = evaluate(kb, af_patient("hypertension", age=None, sex="male"))
    found = score(result, "cha2ds2_vasc")
    assert (found.value, found.range, found.missing) == (None, (1.0, 3.0), ["age"])
    assert points(found)["age"] is None
    assert undetermined(result, "af_oac_recommended").missing == ["age"]
    assert undetermined(result, "af_oac_reasonable").missing == ["age"]
    assert "af_oac_not_recommended" not in undetermined_ids(result)
    assert "anticoagulation_recommended" not in recommendation_statuses(result)


def test_age_unknown_no_risk_factor_leaves_all_three_decisions_open(
    kb: KnowledgeBase,
) -> None:
    result = evaluate(kb, af_patient(age=None, sex="male"))
    assert score(result, "cha2ds2_vasc").range == (0.0, 2.0)
    assert AF_DECISION_RULES <= undetermined_ids(result)


def test_age_unknown_but_prior_stroke_forces_recommended(kb: KnowledgeBase) -> None:
    result = evaluate(
        kb, af_patient("stroke_tia_thromboembolism", age=None, sex="male")
    )
    assert score(result, "cha2ds2_vasc").range == (2.0, 4.0)
    assert af_recommendations(result)["anticoagulation_recommended"] == "recommended"
    assert af_recommendations(result)["doac_preferred"] == "recommended"
    assert not undetermined_ids(result) & AF_DECISION_RULES


# --- valve exceptions -------------------------------------------------------


@pytest.mark.parametrize(
    "valve", ["mechanical_heart_valve", "moderate_severe_mitral_stenosis"]
)
@pytest.mark.parametrize(
    ("names", "age", "sex"),
    [((), 40, "male"), (("hypertension", "diabetes"), 80, "female")],
)
def test_valve_or_mitral_stenosis_means_warfarin_no_doac_and_no_score(
    kb: KnowledgeBase, valve: str, names: tuple[str, ...], age: int, sex: str
) -> None:
    result = evaluate(kb, af_patient(valve, *names, age=age, sex=sex))
    assert af_recommendations(result) == {
        "warfarin_for_valvular_af": "recommended",
        "doac_preferred": "blocked",
        "antiplatelet_instead_of_anticoagulation": "blocked",
    }
    doac = recommendation(result, "doac_preferred")
    assert [(b.rule_id, b.reason) for b in doac.blocked_by] == [
        ("af_valvular_warfarin", VALVE_REASON)
    ]
    warfarin = recommendation(result, "warfarin_for_valvular_af")
    assert (warfarin.strength, warfarin.certainty) == ("strong", 0.95)
    # The score is not used: neither shown nor left undetermined.
    assert "cha2ds2_vasc" not in finding_ids(result)
    assert not undetermined_ids(result) & (AF_DECISION_RULES | {"af_doac_preferred"})


def test_valve_while_taking_a_doac_says_switch_to_warfarin(kb: KnowledgeBase) -> None:
    result = evaluate(
        kb, af_patient("mechanical_heart_valve", age=60, medications=drugs("doac"))
    )
    assert af_recommendations(result)["switch_doac_to_warfarin"] == "recommended"
    assert af_recommendations(result)["doac_preferred"] == "blocked"


def test_doac_allergy_blocks_the_doac_but_not_anticoagulation(
    kb: KnowledgeBase,
) -> None:
    result = evaluate(
        kb, with_allergy(af_patient("hypertension", age=70, sex="male"), "doac")
    )
    doac = recommendation(result, "doac_preferred")
    assert [(b.rule_id, b.reason) for b in doac.blocked_by] == [
        ("allergy", "recorded allergy to doac")
    ]
    assert af_recommendations(result)["anticoagulation_recommended"] == "recommended"
    # Named as the record names it, not only by its class.
    apixaban = CodedEntry(concept="doac", system="local", code="apixaban")
    named = evaluate(
        kb,
        af_patient("hypertension", age=70, sex="male").model_copy(
            update={"allergies": (apixaban,)}
        ),
    )
    assert [b.reason for b in recommendation(named, "doac_preferred").blocked_by] == [
        "recorded allergy to apixaban (doac)"
    ]


# --- forbidden: aspirin +/- clopidogrel instead of anticoagulation ---------


@pytest.mark.parametrize(
    "antiplatelets",
    [("aspirin",), ("clopidogrel",), ("aspirin", "clopidogrel"), ("antiplatelet",)],
)
def test_antiplatelet_in_place_of_anticoagulation_is_blocked_with_its_reason(
    kb: KnowledgeBase, antiplatelets: tuple[str, ...]
) -> None:
    result = evaluate(kb, af_patient(age=78, medications=drugs(*antiplatelets)))
    rec = recommendation(result, "antiplatelet_instead_of_anticoagulation")
    assert rec.status == "blocked"
    assert [(b.rule_id, b.reason) for b in rec.blocked_by] == [
        ("af_antiplatelet_not_oac_substitute", ANTIPLATELET_REASON)
    ]
    # The regimen the record shows is the evidence; anticoagulation stands.
    assert [r.rule_id for r in rec.evidence.rules] == ["af_antiplatelet_without_oac"]
    assert af_recommendations(result)["anticoagulation_recommended"] == "recommended"
    assert af_recommendations(result)["doac_preferred"] == "recommended"


@pytest.mark.parametrize(("sex", "names", "age", "total", "expected"), DECISIONS)
def test_antiplatelet_is_never_recommended_in_af(
    kb: KnowledgeBase,
    sex: str,
    names: tuple[str, ...],
    age: int,
    total: float,
    expected: str,
) -> None:
    result = evaluate(
        kb, af_patient(*names, age=age, sex=sex, medications=drugs("aspirin"))
    )
    assert (
        recommendation(result, "antiplatelet_instead_of_anticoagulation").status
        == "blocked"
    )


def test_antiplatelet_with_an_anticoagulant_still_shows_the_standing_block(
    kb: KnowledgeBase,
) -> None:
    result = evaluate(kb, af_patient(age=78, medications=drugs("aspirin", "doac")))
    rec = recommendation(result, "antiplatelet_instead_of_anticoagulation")
    assert (rec.status, rec.certainty, rec.evidence.rules) == ("blocked", 0.0, [])
    assert "af_antiplatelet_without_oac" not in result.rules_fired


# --- forbidden: withholding anticoagulation on a bleeding score ------------


def _walk(cond: rf.Condition) -> Iterator[rf.Condition]:
    yield cond
    for child in getattr(cond, "all", None) or getattr(cond, "any", None) or []:
        yield from _walk(child)
    for child in getattr(cond, "of", None) or []:
        yield from _walk(child)
    if isinstance(cond, rf.Not):
        yield from _walk(cond.not_)


def test_no_rule_blocks_anticoagulation_on_a_bleeding_score(kb: KnowledgeBase) -> None:
    blocks: list[tuple[str, str]] = []
    for crule in kb.rules:
        targets = [
            a.block.recommendation
            for a in crule.rule.then
            if isinstance(a, rf.BlockAction)
        ]
        scores = {
            c.points for c in _walk(crule.rule.when) if isinstance(c, rf.PointsTest)
        }
        if "has_bled" in scores:
            assert targets == [], crule.rule.id
        blocks += [(crule.rule.id, t) for t in targets if t in ANTICOAGULATION]
    # The only block on an anticoagulant is the valve exception on DOACs.
    assert blocks == [("af_valvular_warfarin", "doac_preferred")]


def test_has_bled_9_leaves_anticoagulation_recommended(kb: KnowledgeBase) -> None:
    result = evaluate(kb, has_bled_patient(*ALL_BLEEDING_RISKS, age=80))
    assert score(result, "has_bled").value == 9.0
    statuses = af_recommendations(result)
    assert statuses["anticoagulation_recommended"] == "recommended"
    assert statuses["doac_preferred"] == "recommended"
    review = recommendation(result, "review_modifiable_bleeding_risk_factors")
    assert review.status == "recommended"
    assert "not a reason to withhold or stop oral anticoagulation" in review.text


# --- HAS-BLED -----------------------------------------------------------------


def bled_results(
    sbp: float = 120,
    scr: tuple[float, str] = (1.0, "mg/dL"),
    bilirubin: tuple[float, str] = (0.5, "mg/dL"),
    ast: float = 20,
    alt: float = 20,
    alp: float = 80,
    alcohol: float = 0,
    ttr: float | None = None,
) -> list[Readings]:
    """Results of the last weeks, all normal unless given."""
    parts = [
        bp(sbp, 80, days_ago=10),
        creatinine(scr[0], scr[1], days_ago=10),
        lab("bilirubin", bilirubin[0], bilirubin[1], days_ago=10),
        lab("ast", ast, "U/L", days_ago=10),
        lab("alt", alt, "U/L", days_ago=10),
        lab("alp", alp, "U/L", days_ago=10),
        lab("alcohol_units_per_week", alcohol, "/wk", days_ago=10),
    ]
    if ttr is not None:
        parts.append(lab("inr_time_in_range", ttr, "%", days_ago=10))
    return parts


# Conditions and drugs that score each of the HAS-BLED items not measured.
ALL_BLEEDING_RISKS = (
    "dialysis_or_kidney_transplant",
    "liver_cirrhosis",
    "stroke_tia_thromboembolism",
    "bleeding_history",
)


def has_bled_patient(
    *names: str,
    age: int = 50,
    medications: Iterable[CodedEntry] = (),
    **results: Any,
) -> Case:
    """A man with AF; every HAS-BLED result normal unless overridden.

    With all of ALL_BLEEDING_RISKS and age 80, the SBP, TTR (on warfarin),
    drugs and alcohol are made to score too, so the total is 9.
    """
    if set(ALL_BLEEDING_RISKS) <= set(names):
        results = {"sbp": 170, "alcohol": 20, "ttr": 40, **results}
        medications = [*medications, *drugs("warfarin", "aspirin")]
    return af_patient(
        *names,
        age=age,
        sex="male",
        medications=medications,
        parts=bled_results(**results),
    )


def bled(kb: KnowledgeBase, c: Case) -> Finding:
    return score(evaluate(kb, c), "has_bled")


def test_has_bled_all_normal_scores_0_with_every_item_known(kb: KnowledgeBase) -> None:
    found = bled(kb, has_bled_patient())
    assert points(found) == dict.fromkeys(HAS_BLED_ITEMS, 0.0)
    assert (found.value, found.missing) == (0.0, [])


def test_has_bled_maximum_is_9(kb: KnowledgeBase) -> None:
    found = bled(kb, has_bled_patient(*ALL_BLEEDING_RISKS, age=80))
    assert points(found) == dict.fromkeys(HAS_BLED_ITEMS, 1.0)
    assert found.value == 9.0


@pytest.mark.parametrize(("sbp", "item_points"), [(160, 0.0), (161, 1.0)])
def test_has_bled_systolic_above_160(
    kb: KnowledgeBase, sbp: float, item_points: float
) -> None:
    found = bled(kb, has_bled_patient(sbp=sbp))
    assert points(found)["hypertension"] == item_points
    assert found.value == item_points


@pytest.mark.parametrize(("age", "item_points"), [(65, 0.0), (66, 1.0)])
def test_has_bled_age_above_65(kb: KnowledgeBase, age: int, item_points: float) -> None:
    found = bled(kb, has_bled_patient(age=age))
    assert points(found)["elderly"] == item_points
    assert found.value == item_points


@pytest.mark.parametrize(("units", "item_points"), [(7, 0.0), (8, 1.0)])
def test_has_bled_alcohol_8_units_a_week(
    kb: KnowledgeBase, units: float, item_points: float
) -> None:
    found = bled(kb, has_bled_patient(alcohol=units))
    assert points(found)["alcohol"] == item_points
    assert found.value == item_points


@pytest.mark.parametrize(
    ("value", "unit", "item_points"),
    [
        (199, "umol/L", 0.0),
        (200, "umol/L", 1.0),
        (2.25, "mg/dL", 0.0),
        (2.26, "mg/dL", 1.0),
    ],
)
def test_has_bled_creatinine_200_umol_or_2_26_mg_in_its_own_unit(
    kb: KnowledgeBase, value: float, unit: str, item_points: float
) -> None:
    # 2.26 mg/dL is 199.8 umol/L: it scores because it is compared with the
    # mg/dL cut point (spec 0.2), not converted to the umol/L one.
    found = bled(kb, has_bled_patient(scr=(value, unit)))
    assert points(found)["renal"] == item_points
    assert found.value == item_points


def test_has_bled_dialysis_scores_renal_with_normal_creatinine(
    kb: KnowledgeBase,
) -> None:
    found = bled(kb, has_bled_patient("dialysis_or_kidney_transplant"))
    assert points(found)["renal"] == 1.0


@pytest.mark.parametrize(
    ("names", "results", "item_points"),
    [
        (("liver_cirrhosis",), {}, 1.0),
        ((), {"bilirubin": (2.5, "mg/dL"), "alt": 121}, 1.0),
        ((), {"bilirubin": (2.5, "mg/dL"), "ast": 121}, 1.0),
        ((), {"bilirubin": (2.5, "mg/dL"), "alp": 361}, 1.0),
        ((), {"bilirubin": (42, "umol/L"), "ast": 121}, 1.0),
        ((), {"bilirubin": (2.4, "mg/dL"), "alt": 500}, 0.0),
        ((), {"bilirubin": (41, "umol/L"), "alt": 500}, 0.0),
        ((), {"bilirubin": (2.5, "mg/dL"), "ast": 120, "alt": 120, "alp": 360}, 0.0),
        ((), {"bilirubin": (0.5, "mg/dL"), "ast": 500, "alt": 500, "alp": 900}, 0.0),
    ],
)
def test_has_bled_liver_item(
    kb: KnowledgeBase,
    names: tuple[str, ...],
    results: dict[str, Any],
    item_points: float,
) -> None:
    found = bled(kb, has_bled_patient(*names, **results))
    assert points(found)["liver"] == item_points


@pytest.mark.parametrize(
    ("condition", "item"),
    [("stroke_tia_thromboembolism", "stroke"), ("bleeding_history", "bleeding")],
)
def test_has_bled_stroke_and_bleeding_history(
    kb: KnowledgeBase, condition: str, item: str
) -> None:
    found = bled(kb, has_bled_patient(condition))
    assert points(found) == dict.fromkeys(HAS_BLED_ITEMS, 0.0) | {item: 1.0}


@pytest.mark.parametrize(
    ("medications", "ttr", "item_points"),
    [
        (("warfarin",), 59, 1.0),
        (("warfarin",), 60, 0.0),
        (("doac",), 40, 0.0),
        ((), 40, 0.0),
    ],
)
def test_has_bled_labile_inr_counts_only_on_warfarin(
    kb: KnowledgeBase, medications: tuple[str, ...], ttr: float, item_points: float
) -> None:
    found = bled(kb, has_bled_patient(medications=drugs(*medications), ttr=ttr))
    assert points(found)["labile_inr"] == item_points


def test_has_bled_on_warfarin_without_ttr_cannot_be_determined(
    kb: KnowledgeBase,
) -> None:
    result = evaluate(kb, has_bled_patient(medications=drugs("warfarin")))
    found = score(result, "has_bled")
    assert points(found)["labile_inr"] is None
    assert (found.value, found.range, found.missing) == (
        None,
        (0.0, 1.0),
        ["inr_time_in_range"],
    )
    # 0 or 1 cannot reach 3: the high-risk rule is decided, not undetermined.
    assert "has_bled_high_risk" not in undetermined_ids(result)


@pytest.mark.parametrize(
    "medications",
    [
        ("aspirin",),
        ("clopidogrel",),
        ("antiplatelet",),
        ("nsaid",),
        ("aspirin", "nsaid"),
    ],
)
def test_has_bled_antiplatelet_or_nsaid_scores_one_point(
    kb: KnowledgeBase, medications: tuple[str, ...]
) -> None:
    found = bled(kb, has_bled_patient(medications=drugs(*medications)))
    assert points(found)["drugs"] == 1.0
    assert found.value == 1.0


def test_has_bled_2_is_not_high(kb: KnowledgeBase) -> None:
    result = evaluate(kb, has_bled_patient("bleeding_history", sbp=161))
    assert score(result, "has_bled").value == 2.0
    assert "has_bled_high" not in finding_ids(result)
    assert "review_modifiable_bleeding_risk_factors" not in recommendation_statuses(
        result
    )
    assert "has_bled_high_risk" not in undetermined_ids(result)


def test_has_bled_3_is_high_and_prompts_a_review_only(kb: KnowledgeBase) -> None:
    result = evaluate(kb, has_bled_patient("bleeding_history", sbp=161, age=66))
    assert score(result, "has_bled").value == 3.0
    assert "has_bled_high" in finding_ids(result)
    review = recommendation(result, "review_modifiable_bleeding_risk_factors")
    assert (review.status, review.strength) == ("recommended", "moderate")
    assert [r.rule_id for r in review.evidence.rules] == ["has_bled_high_risk"]
    # CHA2DS2-VASc 1 for this man of 66: one SBP of 161 is not hypertension
    # (Lip 2010 needs two occasions); anticoagulation stays reasonable.
    assert score(result, "cha2ds2_vasc").value == 1.0
    statuses = af_recommendations(result)
    assert statuses["anticoagulation_reasonable"] == "recommended"
    assert statuses["doac_preferred"] == "recommended"


def test_has_bled_without_results_cannot_be_determined(kb: KnowledgeBase) -> None:
    result = evaluate(kb, af_patient(age=50))
    found = score(result, "has_bled")
    assert found.value is None
    assert found.range == (0.0, 4.0)
    missing = [
        "alcohol_units_per_week",
        "alp",
        "alt",
        "ast",
        "bilirubin",
        "creatinine",
        "systolic_bp",
    ]
    assert found.missing == missing
    assert undetermined(result, "has_bled_high_risk").missing == missing
    assert "has_bled_high" not in finding_ids(result)


def test_has_bled_known_items_that_reach_3_decide_it(kb: KnowledgeBase) -> None:
    c = af_patient(
        "bleeding_history", "stroke_tia_thromboembolism", age=70, sex="female"
    )
    result = evaluate(kb, c)
    assert score(result, "has_bled").value is None
    assert "has_bled_high" in finding_ids(result)
    assert "has_bled_high_risk" not in undetermined_ids(result)


def test_has_bled_missing_alcohol_cannot_lift_1_to_3(kb: KnowledgeBase) -> None:
    parts = [p for p in bled_results(sbp=161) if "alcohol_units_per_week" not in p]
    result = evaluate(kb, af_patient(age=50, parts=parts))
    found = score(result, "has_bled")
    assert (found.range, found.missing) == ((1.0, 2.0), ["alcohol_units_per_week"])
    assert "has_bled_high_risk" not in undetermined_ids(result)
    assert "has_bled_high" not in finding_ids(result)


def test_has_bled_results_older_than_12_months_do_not_count(
    kb: KnowledgeBase,
) -> None:
    old = af_patient(age=50, parts=[bp(170, 80, days_ago=400)])
    found = bled(kb, old)
    assert points(found)["hypertension"] is None
    assert "systolic_bp" in found.missing


def test_has_bled_shown_only_with_atrial_fibrillation(kb: KnowledgeBase) -> None:
    result = evaluate(
        kb,
        case(
            *bled_results(sbp=170),
            age=80,
            sex="male",
            conditions=conditions("bleeding_history", "stroke_tia_thromboembolism"),
        ),
    )
    assert "has_bled" not in finding_ids(result)
    assert "has_bled_high" not in finding_ids(result)
    assert "has_bled_high_risk" not in undetermined_ids(result)


# --- Wells score for PE -------------------------------------------------------


def heart_rate(value: float, days_ago: float = 0.1) -> Readings:
    return lab("heart_rate", value, "/min", days_ago=days_ago)


def pe_patient(*names: str, hr: float | None = 80, hr_days_ago: float = 0.1) -> Case:
    parts = [heart_rate(hr, hr_days_ago)] if hr is not None else []
    return case(
        *parts,
        age=55,
        sex="female",
        conditions=conditions("suspected_pulmonary_embolism", *names),
    )


def wells_findings(result: Assessment) -> set[str]:
    return finding_ids(result) & WELLS_FINDINGS


@pytest.mark.parametrize(("hr", "item_points"), [(100, 0.0), (101, 1.5)])
def test_wells_heart_rate_above_100(
    kb: KnowledgeBase, hr: float, item_points: float
) -> None:
    found = score(evaluate(kb, pe_patient(hr=hr)), "wells_pe")
    assert points(found)["heart_rate"] == item_points
    assert found.value == item_points


@pytest.mark.parametrize(
    ("condition", "item", "item_points"),
    [
        ("dvt_signs", "dvt_signs", 3.0),
        ("pe_most_likely", "pe_most_likely", 3.0),
        ("immobilised_or_recent_surgery", "immobilisation_or_surgery", 1.5),
        ("prior_dvt_pe", "prior_dvt_pe", 1.5),
        ("haemoptysis", "haemoptysis", 1.0),
        ("malignancy", "malignancy", 1.0),
    ],
)
def test_wells_each_item_scores_its_points(
    kb: KnowledgeBase, condition: str, item: str, item_points: float
) -> None:
    found = score(evaluate(kb, pe_patient(condition)), "wells_pe")
    assert points(found) == dict.fromkeys(WELLS_ITEMS, 0.0) | {item: item_points}
    assert found.value == item_points


def test_wells_maximum_is_12_5(kb: KnowledgeBase) -> None:
    every = (
        "dvt_signs",
        "pe_most_likely",
        "immobilised_or_recent_surgery",
        "prior_dvt_pe",
        "haemoptysis",
        "malignancy",
    )
    found = score(evaluate(kb, pe_patient(*every, hr=120)), "wells_pe")
    assert found.value == 12.5


TIERS = [
    # conditions, heart rate, total, three-tier finding, two-tier finding
    ((), 101, 1.5, "wells_pe_low", "wells_pe_unlikely"),
    (("haemoptysis", "malignancy"), 80, 2.0, "wells_pe_moderate", "wells_pe_unlikely"),
    (("dvt_signs", "malignancy"), 80, 4.0, "wells_pe_moderate", "wells_pe_unlikely"),
    (("dvt_signs",), 101, 4.5, "wells_pe_moderate", "wells_pe_likely"),
    (("dvt_signs", "pe_most_likely"), 80, 6.0, "wells_pe_moderate", "wells_pe_likely"),
    (
        ("dvt_signs", "haemoptysis", "malignancy"),
        101,
        6.5,
        "wells_pe_high",
        "wells_pe_likely",
    ),
]


@pytest.mark.parametrize(("names", "hr", "total", "three", "two"), TIERS)
def test_wells_three_tier_and_two_tier_at_each_cut_point(
    kb: KnowledgeBase,
    names: tuple[str, ...],
    hr: float,
    total: float,
    three: str,
    two: str,
) -> None:
    result = evaluate(kb, pe_patient(*names, hr=hr))
    assert score(result, "wells_pe").value == total
    assert wells_findings(result) == {three, two}
    assert not undetermined_ids(result) & WELLS_RULES


def test_wells_pe_likely_goes_to_ctpa_and_blocks_the_d_dimer_route(
    kb: KnowledgeBase,
) -> None:
    result = evaluate(kb, pe_patient("dvt_signs", hr=101))
    assert recommendation_statuses(result)["ctpa_for_likely_pe"] == "recommended"
    ctpa = recommendation(result, "ctpa_for_likely_pe")
    assert (ctpa.strength, ctpa.certainty) == ("strong", 0.9)
    d_dimer = recommendation(result, "d_dimer_to_exclude_pe")
    assert d_dimer.status == "blocked"
    assert [(b.rule_id, b.reason) for b in d_dimer.blocked_by] == [
        ("wells_pe_two_tier_likely", D_DIMER_REASON)
    ]


def test_wells_pe_unlikely_starts_with_a_d_dimer(kb: KnowledgeBase) -> None:
    result = evaluate(kb, pe_patient("dvt_signs", "malignancy", hr=100))
    statuses = recommendation_statuses(result)
    assert statuses["d_dimer_to_exclude_pe"] == "recommended"
    assert "ctpa_for_likely_pe" not in statuses


def test_wells_without_heart_rate_low_and_unlikely_are_forced(
    kb: KnowledgeBase,
) -> None:
    result = evaluate(kb, pe_patient(hr=None))
    found = score(result, "wells_pe")
    assert (found.value, found.range, found.missing) == (
        None,
        (0.0, 1.5),
        ["heart_rate"],
    )
    assert wells_findings(result) == {"wells_pe_low", "wells_pe_unlikely"}
    assert not undetermined_ids(result) & WELLS_RULES


def test_wells_without_heart_rate_6_to_7_5_is_likely_tier_undetermined(
    kb: KnowledgeBase,
) -> None:
    result = evaluate(kb, pe_patient("dvt_signs", "pe_most_likely", hr=None))
    assert score(result, "wells_pe").range == (6.0, 7.5)
    assert wells_findings(result) == {"wells_pe_likely"}
    assert recommendation_statuses(result)["ctpa_for_likely_pe"] == "recommended"
    for rule_id in ("wells_pe_three_tier_moderate", "wells_pe_three_tier_high"):
        assert undetermined(result, rule_id).missing == ["heart_rate"]


def test_wells_without_heart_rate_3_to_4_5_is_moderate_two_tier_undetermined(
    kb: KnowledgeBase,
) -> None:
    result = evaluate(kb, pe_patient("dvt_signs", hr=None))
    assert wells_findings(result) == {"wells_pe_moderate"}
    for rule_id in ("wells_pe_two_tier_unlikely", "wells_pe_two_tier_likely"):
        assert undetermined(result, rule_id).missing == ["heart_rate"]
    assert "ctpa_for_likely_pe" not in recommendation_statuses(result)
    assert "d_dimer_to_exclude_pe" not in recommendation_statuses(result)


def test_wells_heart_rate_older_than_a_day_does_not_count(kb: KnowledgeBase) -> None:
    result = evaluate(kb, pe_patient("dvt_signs", hr=120, hr_days_ago=2))
    found = score(result, "wells_pe")
    assert points(found)["heart_rate"] is None
    assert found.missing == ["heart_rate"]


def test_wells_shown_only_when_pe_is_suspected(kb: KnowledgeBase) -> None:
    c = case(
        heart_rate(120),
        age=55,
        sex="female",
        conditions=conditions("dvt_signs", "pe_most_likely"),
    )
    result = evaluate(kb, c)
    assert "wells_pe" not in finding_ids(result)
    assert wells_findings(result) == set()
    assert not undetermined_ids(result) & WELLS_RULES
    assert "ctpa_for_likely_pe" not in recommendation_statuses(result)


# --- engine limitations found while writing these rules (now fixed) ---------


def test_misspelt_drug_of_a_recommendation_is_a_rule_file_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "misspelt_drug.yaml"
    path.write_text(
        "ruleset: {id: misspelt, title: t, version: 0.0.1, source: tests}\n"
        "rules:\n"
        "  - id: give_doac\n"
        "    title: t\n"
        "    when: {condition: atrial_fibrillation}\n"
        "    then:\n"
        "      - recommendation: {id: doac, text: t, strength: weak, drug: doak}\n",
        encoding="utf-8",
    )
    with pytest.raises(RuleFileError):
        KnowledgeBase.load(rules=path, models=MODELS)


def test_case_file_aspirin_is_also_an_antiplatelet(tmp_path: Path) -> None:
    path = tmp_path / "aspirin.yaml"
    path.write_text(
        "patient: {age: 70, sex: male}\nmedications: [aspirin]\n", encoding="utf-8"
    )
    concepts = {m.concept for m in read_input(path).medications}
    assert concepts == {"aspirin", "antiplatelet"}
