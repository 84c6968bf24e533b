"""The breast_cytology model, its catalogue facts and its rules, end to end."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sklearn
from click.testing import CliRunner
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import brier_score_loss, roc_auc_score

from cli import main
from engine import (
    Assessment,
    KnowledgeBase,
    ModelIntegrityError,
    Recommendation,
    Score,
)
from engine.casefile import read_case_data
from engine.catalogue import default_catalogue
from engine.certainty import update_with_score
from engine.errors import ModelVersionWarning
from engine.modelspec import ModelCard, load_spec
from engine.scoring import ScoringModel, load_model
from engine.training import (
    load_training_data,
    render_card_markdown,
    split_training_data,
)
from engine.units import _parse, same_dimension

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "breast_cytology"
SPEC = MODEL / "spec.yaml"
DATA = Path(__file__).resolve().parent / "data"
AS_OF = datetime(2025, 6, 1, tzinfo=UTC)
RULES = (
    "breast_cytology_high_score",
    "breast_cytology_intermediate_score",
    "breast_cytology_low_score",
)
FACTS = (
    "breast_fna_mean_texture",
    "breast_fna_worst_area",
    "breast_fna_worst_smoothness",
    "breast_fna_worst_concave_points",
    "breast_fna_worst_symmetry",
)

# Medians of the malignant and of the benign WDBC aspirates (as in the case
# files under tests/data), and two points between them: one scoring about 0.2,
# one about 0.66.
MALIGNANT = dict(zip(FACTS, (21.46, 1303.0, 0.1435, 0.182, 0.3103), strict=True))
BENIGN = dict(zip(FACTS, (17.39, 547.4, 0.1254, 0.07431, 0.2687), strict=True))
BETWEEN = dict(zip(FACTS, (18.81, 811.9, 0.1317, 0.112, 0.2833), strict=True))
BORDERLINE = dict(zip(FACTS, (19.43, 925.2, 0.1345, 0.1282, 0.2895), strict=True))


@pytest.fixture(scope="module")
def model() -> ScoringModel:
    return load_model(MODEL)


def _evaluate(
    kb: KnowledgeBase, values: Mapping[str, float | None], when: str = "2025-05-20"
) -> Assessment:
    facts = {k: f"{v} @ {when}" for k, v in values.items() if v is not None}
    data: dict[str, Any] = {
        "id": "fna",
        "patient": {"age": 52, "sex": "female"},
        "facts": facts,
    }
    return kb.evaluate(read_case_data(data, source="fna.yaml"), as_of=AS_OF)


def _score(result: Assessment) -> Score:
    return next(s for s in result.scores if s.name == "breast_cytology")


def _recommendations(result: Assessment) -> dict[str, Recommendation]:
    # The cytology ruleset's own: a woman of 52 with no lipids on record also
    # gets the statin ruleset's obtain_lipid_panel, not this file's concern.
    return {r.id: r for r in result.recommendations if r.id != "obtain_lipid_panel"}


def _fired(result: Assessment) -> set[str]:
    return set(result.rules_fired) & set(RULES)


def _undetermined(result: Assessment) -> dict[str, list[str]]:
    return {u.rule_id: u.missing for u in result.undetermined if u.rule_id in RULES}


# --- the committed model ------------------------------------------------------


def test_committed_artifact_loads_and_matches_its_card(model: ScoringModel) -> None:
    digest = hashlib.sha256((MODEL / "model.skops").read_bytes()).hexdigest()
    card = model.card

    assert digest == card.artifact.sha256
    assert (model.id, model.version) == ("breast_cytology", "1.0.0")
    assert model.facts_needed() == list(FACTS)
    assert [f.column for f in card.features] == [
        "mean texture",
        "worst area",
        "worst smoothness",
        "worst concave points",
        "worst symmetry",
    ]
    assert card.calibration == "sigmoid"
    assert (card.target.positive_if, card.target.positive_label) == (
        "== 0",
        "malignant",
    )
    assert len(card.features) + len(card.excluded_columns) == 30
    assert card.dataset.source == "sklearn.datasets.load_breast_cancer()"
    assert (
        card.libraries.scikit_learn.split(".")[:2] == sklearn.__version__.split(".")[:2]
    )


def test_committed_model_card_markdown_is_rendered_from_card_json() -> None:
    card = ModelCard.model_validate_json((MODEL / "card.json").read_text())
    text = (MODEL / "MODEL_CARD.md").read_text()
    assert text == render_card_markdown(card)
    assert "never replaces triple assessment" in card.intended_use
    assert "| ROC AUC | 0.975 |" in text


def test_score_is_the_probability_of_malignancy(model: ScoringModel) -> None:
    # scikit-learn codes malignant as 0; a flipped positive class would score
    # the benign aspirates high.
    bunch = load_breast_cancer()
    names = [str(n) for n in bunch.feature_names]
    columns = [names.index(f.column) for f in model.card.features]
    p = model.estimator.predict_proba(bunch.data[:, columns])[:, 1]
    malignant = bunch.target == 0

    assert roc_auc_score(malignant, p) > 0.98
    assert float(np.median(p[malignant])) > 0.95
    assert float(np.median(p[~malignant])) < 0.01


def test_card_metrics_come_from_the_held_out_split(model: ScoringModel) -> None:
    spec = load_spec(SPEC)
    _x_train, x_test, y_train, y_test = split_training_data(
        spec, load_training_data(spec, MODEL)
    )
    held = model.card.held_out
    p_test = model.estimator.predict_proba(x_test)[:, 1]

    assert (held.n_train, held.n_test) == (426, 143)
    assert int(y_test.sum()) == 53
    assert held.roc_auc == pytest.approx(roc_auc_score(y_test, p_test))
    assert held.brier_score == pytest.approx(brier_score_loss(y_test, p_test))
    assert held.prevalence_train == pytest.approx(y_train.mean())
    assert sum(b.n for b in held.reliability) == 143
    # The two malignant held-out aspirates scored below 0.03 (rule file and
    # docs/models.md cite this).
    assert int(((p_test < 0.03) & (y_test == 1)).sum()) == 2
    assert int((p_test < 0.03).sum()) == 69


def test_cli_train_reproduces_the_card_metrics(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["models", "train", str(SPEC), "--out", str(tmp_path)]
    )

    assert result.exit_code == 0, result.output
    assert "trained breast_cytology 1.0.0: held-out ROC AUC 0.975" in result.stdout
    committed = ModelCard.model_validate_json((MODEL / "card.json").read_text())
    fresh = ModelCard.model_validate_json((tmp_path / "card.json").read_text())
    for name in ("roc_auc", "brier_score", "calibration_slope"):
        got, want = getattr(fresh.held_out, name), getattr(committed.held_out, name)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12), name
    assert fresh.held_out.calibration_intercept == pytest.approx(
        committed.held_out.calibration_intercept, rel=1e-9, abs=1e-12
    )
    for got_bin, want_bin in zip(
        fresh.held_out.reliability, committed.held_out.reliability, strict=True
    ):
        assert got_bin.n == want_bin.n
        assert got_bin.observed == pytest.approx(want_bin.observed)
        assert got_bin.mean_predicted == pytest.approx(
            want_bin.mean_predicted, rel=1e-9, abs=1e-12
        )
    assert fresh.cross_validation.roc_auc_mean == pytest.approx(
        committed.cross_validation.roc_auc_mean, rel=1e-9
    )
    assert fresh.features == committed.features


# --- catalogue facts ----------------------------------------------------------


@pytest.mark.parametrize("name", FACTS)
def test_every_feature_has_a_catalogue_fact_without_loinc(name: str) -> None:
    fact = default_catalogue().quantities[name]

    assert fact.unit == "1" and fact.units == ("1",)
    assert fact.loinc == ()
    assert fact.plausible is not None
    assert fact.meaning.startswith("Breast FNA")
    assert same_dimension(fact.unit, fact.unit)
    # same_dimension answers equal strings without parsing; parse for real.
    assert _parse(fact.unit).dimensionless


def test_catalogue_ranges_are_the_range_of_the_data() -> None:
    bunch = load_breast_cancer()
    names = [str(n) for n in bunch.feature_names]
    card = load_model(MODEL).card
    for feature in card.features:
        column = bunch.data[:, names.index(feature.column)]
        low, high = default_catalogue().quantities[feature.fact].plausible or (0, 0)
        assert (low, high) == pytest.approx((column.min(), column.max()))
        assert low <= feature.train_min <= feature.train_max <= high


def test_case_file_reads_unitless_values() -> None:
    case = read_case_data(
        {"facts": {"breast_fna_worst_area": "1303 @ 2025-05-20"}}, source="c.yaml"
    )
    (reading,) = case.readings["breast_fna_worst_area"]
    assert (reading.value, reading.unit) == (1303.0, "1")


# --- rules, end to end --------------------------------------------------------


def test_malignant_looking_case_file_is_referred_with_updated_certainty(
    kb: KnowledgeBase,
) -> None:
    result = kb.evaluate(DATA / "case-breast-cytology.yaml", as_of=AS_OF)
    score = _score(result)
    refer = _recommendations(result)["refer_breast_specialist_urgent"]
    prior = kb.models["breast_cytology"].card.held_out.prevalence_train

    assert result.status == "complete"
    assert score.value is not None
    assert score.value == pytest.approx(0.99938, abs=1e-4)
    assert _fired(result) == {"breast_cytology_high_score"}
    assert refer.status == "recommended" and refer.strength == "strong"
    assert refer.certainty == round(update_with_score(0.8, score.value, prior), 4)
    assert refer.certainty > 0.8
    assert "updated by score breast_cytology=0.999 against prior 0.373" in (
        refer.certainty_method
    )
    assert refer.evidence.scores == ["breast_cytology"]
    assert [r.rule_id for r in refer.evidence.rules] == ["breast_cytology_high_score"]
    assert score.contributions[0][0] == "worst_area"
    assert score.contributions[0][1] > 0


def test_benign_looking_case_file_is_not_referred(kb: KnowledgeBase) -> None:
    result = kb.evaluate(DATA / "case-breast-cytology-benign.yaml", as_of=AS_OF)
    recs = _recommendations(result)

    assert _score(result).value == pytest.approx(0.00225, abs=1e-4)
    assert "refer_breast_specialist_urgent" not in recs
    assert "complete_breast_triple_assessment" not in recs
    assert _fired(result) == {"breast_cytology_low_score"}
    follow_up = recs["routine_breast_follow_up"]
    # Not adjusted by the score: a malignancy probability is no evidence for
    # routine follow-up.
    assert follow_up.certainty == 0.6
    assert "updated" not in follow_up.certainty_method
    assert "does not rule cancer out" in follow_up.text
    assert _undetermined(result) == {}


def test_borderline_high_score_raises_certainty_less(kb: KnowledgeBase) -> None:
    result = _evaluate(kb, BORDERLINE)
    value = _score(result).value
    refer = _recommendations(result)["refer_breast_specialist_urgent"]
    prior = kb.models["breast_cytology"].card.held_out.prevalence_train

    assert value is not None and 0.5 < value < 0.8
    assert refer.certainty == round(update_with_score(0.8, value, prior), 4)
    assert 0.8 < refer.certainty < 0.95


def test_intermediate_score_asks_for_core_biopsy(kb: KnowledgeBase) -> None:
    result = _evaluate(kb, BETWEEN)
    recs = _recommendations(result)
    value = _score(result).value

    assert value is not None and 0.03 <= value < 0.5
    assert _fired(result) == {"breast_cytology_intermediate_score"}
    assert set(recs) == {"complete_breast_triple_assessment"}
    assert recs["complete_breast_triple_assessment"].certainty == 0.7


def test_missing_input_gives_no_score_and_undetermined_rules(
    kb: KnowledgeBase,
) -> None:
    result = _evaluate(kb, {**MALIGNANT, "breast_fna_worst_symmetry": None})
    score = _score(result)

    assert score.value is None
    assert score.missing == ["breast_fna_worst_symmetry"]
    assert _fired(result) == set()
    assert _undetermined(result) == {
        rule: ["breast_fna_worst_symmetry"] for rule in RULES
    }
    assert not set(_recommendations(result)) & {
        "refer_breast_specialist_urgent",
        "complete_breast_triple_assessment",
        "routine_breast_follow_up",
    }


def test_out_of_range_input_is_flagged_on_the_score_and_in_the_notes(
    kb: KnowledgeBase,
) -> None:
    result = _evaluate(kb, {**BENIGN, "breast_fna_worst_area": 5000.0})
    score = _score(result)

    assert score.value is not None and score.value > 0.99
    assert score.out_of_range == ["worst_area"]
    assert score.inputs["worst_area"] == 5000.0
    assert "score breast_cytology: outside the training range: worst_area" in (
        result.notes
    )
    plausibility = [n for n in result.notes if "breast_fna_worst_area" in n]
    assert plausibility, result.notes
    assert "refer_breast_specialist_urgent" in _recommendations(result)


def test_case_without_aspirate_features_leaves_the_rules_out(
    kb: KnowledgeBase,
) -> None:
    result = kb.evaluate(ROOT / "examples" / "case-diabetic-ckd.yaml", as_of=AS_OF)
    score = _score(result)

    assert score.value is None and score.missing == list(FACTS)
    assert _fired(result) == set()
    assert _undetermined(result) == {}


def test_rules_wait_for_recent_aspirate_features(kb: KnowledgeBase) -> None:
    # XXX pinned (rules/breast_cytology.yaml): features older than 3 months
    # keep the rules quiet, but the score is still computed from them.
    result = _evaluate(kb, MALIGNANT, when="2024-01-10")

    assert _score(result).value == pytest.approx(0.99938, abs=1e-4)
    assert _fired(result) == set()
    assert _undetermined(result) == {}
    assert "refer_breast_specialist_urgent" not in _recommendations(result)


# --- artifact integrity -------------------------------------------------------


@pytest.fixture
def models_copy(tmp_path: Path) -> Path:
    """A writable copy of the bundled models folder."""
    folder = tmp_path / "models"
    shutil.copytree(ROOT / "models", folder)
    return folder


def test_tampered_artifact_refuses_the_knowledge_base(models_copy: Path) -> None:
    artifact = models_copy / "breast_cytology" / "model.skops"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 3] ^= 0x01
    artifact.write_bytes(bytes(data))

    with pytest.raises(ModelIntegrityError) as caught:
        KnowledgeBase.load(models=models_copy)

    message = str(caught.value)
    assert str(artifact) in message
    assert hashlib.sha256(bytes(data)).hexdigest() in message
    assert "retrain with `cdss models train <spec>` or restore the artifact" in message


def _set_sklearn_version(folder: Path, version: str) -> None:
    path = folder / "breast_cytology" / "card.json"
    card = json.loads(path.read_text())
    card["libraries"]["scikit_learn"] = version
    path.write_text(json.dumps(card))


def test_card_of_another_sklearn_minor_version_is_refused(models_copy: Path) -> None:
    major, minor = (int(p) for p in sklearn.__version__.split(".")[:2])
    other = f"{major}.{minor + 1}.0"
    _set_sklearn_version(models_copy, other)

    with pytest.raises(ModelIntegrityError) as caught:
        KnowledgeBase.load(models=models_copy)

    message = str(caught.value)
    assert f"trained with scikit-learn {other}, running {sklearn.__version__}" in (
        message
    )
    assert f"install scikit-learn {major}.{minor + 1}" in message
    assert "breast_cytology" in message


def test_card_of_another_sklearn_patch_version_loads_with_a_warning(
    models_copy: Path,
) -> None:
    major, minor = sklearn.__version__.split(".")[:2]
    _set_sklearn_version(models_copy, f"{major}.{minor}.999")
    with pytest.warns(ModelVersionWarning, match=r"\.999"):
        kb = KnowledgeBase.load(models=models_copy)
    assert "breast_cytology" in kb.models


# --- docs ---------------------------------------------------------------------


def test_docs_quote_each_cards_figures() -> None:
    text = (ROOT / "docs" / "models.md").read_text()
    text = text[text.index("## Held-out figures") :]
    for folder in ("diabetes_progression", "breast_cytology"):
        card = ModelCard.model_validate_json(
            (ROOT / "models" / folder / "card.json").read_text()
        )
        held = card.held_out
        row = re.search(rf"^\| `{card.id}` .*$", text, flags=re.MULTILINE)
        assert row is not None, card.id
        for figure in (
            f"{held.roc_auc:.3f}",
            f"{held.brier_score:.3f}",
            f"{held.calibration_slope:.2f}",
            f"{held.calibration_intercept:.2f}",
            f"{card.cross_validation.roc_auc_mean:.3f}",
        ):
            assert figure in row.group(0), (card.id, figure)
