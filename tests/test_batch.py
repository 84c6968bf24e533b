"""Batch evaluation: one NDJSON line per input case, no input lost, any worker count.

The shared Synthea bundles are used when present; every other test writes its
own small bundles, NDJSON files and bulk exports.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner
from rich.console import Console

from cli import (
    EXIT_BATCH_FAILED,
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    main,
    render_batch,
)
from engine import EvaluationError, InputError
from engine.batch import (
    CHUNK_SIZE,
    BatchSummary,
    KnowledgeBaseSpec,
    ProcessPool,
    Settings,
    plan_inputs,
    run_batch,
)
from engine.bulk import WorkItem
from engine.evaluation import evaluate_case, evaluate_cases
from engine.inputs import read_input, read_input_data

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "fhir"
BUNDLES = sorted(SHARED.glob("*.json")) if SHARED.is_dir() else []
needs_shared = pytest.mark.skipif(not BUNDLES, reason=f"no bundles at {SHARED}")

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
AS_OF = datetime(2024, 6, 1, tzinfo=UTC)


# --- small inputs ---------------------------------------------------------------


def patient(pid: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "gender": "female",
        "birthDate": "1957-03-02",
    }


def bp(oid: str, pid: str, systolic: float, diastolic: float, when: str) -> Any:
    def part(code: str, value: float) -> dict[str, Any]:
        q = {"value": value, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"}
        return {
            "code": {"coding": [{"system": LOINC, "code": code}]},
            "valueQuantity": q,
        }

    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
        "effectiveDateTime": when,
        "component": [part("8480-6", systolic), part("8462-4", diastolic)],
    }


def hypertensive(pid: str) -> list[dict[str, Any]]:
    """A patient with two stage-2 readings on separate days."""
    return [
        patient(pid),
        bp(f"{pid}-bp1", pid, 152, 96, "2024-03-01T09:30:00+00:00"),
        bp(f"{pid}-bp2", pid, 148, 94, "2024-04-02T09:30:00+00:00"),
    ]


def bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
    }


def write_json(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def broken_files(folder: Path) -> dict[str, Path]:
    """The three broken kinds: not JSON, no Patient, a date that is none."""
    folder.mkdir(parents=True, exist_ok=True)
    bad_date = bp("u1", "pu", 150, 90, "2024-13-45T09:30:00+00:00")
    not_json = folder / "not-json.json"
    not_json.write_text('{"resourceType": "Bundle", "entry": [', encoding="utf-8")
    return {
        "not_json": not_json,
        "no_patient": write_json(
            folder / "no-patient.json", bundle(hypertensive("pn")[1:])
        ),
        "bad_date": write_json(
            folder / "bad-date.json", bundle([patient("pu"), bad_date])
        ),
    }


def lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def run(*args: str) -> tuple[int, str, str]:
    """Run cdss; stderr comes back with rich's line wrapping undone."""
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, flat(result.stderr)


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(KnowledgeBaseSpec(), AS_OF)


# --- the command ------------------------------------------------------------------


@needs_shared
def test_shared_folder_gives_one_assessment_per_bundle_named_by_patient(
    tmp_path: Path,
) -> None:
    out = tmp_path / "r.ndjson"
    code, _, err = run("batch", str(SHARED), "--out", str(out), "--as-of", "last")
    assert code == 0, err
    docs = lines(out)
    assert len(docs) == 100
    patient_ids = []
    for path in BUNDLES:
        entries = json.loads(path.read_bytes())["entry"]
        patient_ids += [
            e["resource"]["id"]
            for e in entries
            if e["resource"]["resourceType"] == "Patient"
        ]
    assert [d["case_id"] for d in docs] == patient_ids
    assert [d["source"] for d in docs] == [str(p) for p in BUNDLES]
    assert {d["status"] for d in docs} == {"complete"}
    assert "cases written" in err and "100" in err


@needs_shared
def test_broken_files_beside_the_shared_ones_give_one_error_line_each(
    tmp_path: Path,
) -> None:
    broken = broken_files(tmp_path / "broken")
    out = tmp_path / "r.ndjson"
    code, _, err = run(
        "batch", str(SHARED), str(tmp_path / "broken"), "--out", str(out),
        "--as-of", "last", "--workers", "2",
    )  # fmt: skip
    assert code == EXIT_BATCH_FAILED
    docs = lines(out)
    assert len(docs) == 103
    errors = {Path(d["file"]).name: d for d in docs if d["status"] == "error"}
    assert sorted(errors) == sorted(p.name for p in broken.values())
    assert "neither JSON nor YAML" in errors["not-json.json"]["reason"]
    assert "no Patient resource" in errors["no-patient.json"]["reason"]
    assert (
        "is not a valid date (month must be in 1..12)"
        in (errors["bad-date.json"]["reason"])
    )
    assert all(e["line"] is None and e["error"] == "input" for e in errors.values())
    assert "failures (error records) │ 3" in err


def test_mixed_folder_keeps_file_order_and_the_exit_code_says_failures(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "in"
    broken = broken_files(folder)
    write_json(folder / "a-good.json", bundle(hypertensive("pa")))
    write_json(folder / "z-good.json", bundle(hypertensive("pz")))
    out = tmp_path / "r.ndjson"
    code, _, err = run(
        "batch", str(folder), "--out", str(out), "--workers", "1",
        "--as-of", "2024-06-01",
    )  # fmt: skip
    assert code == EXIT_BATCH_FAILED
    said = " ".join(err.split())  # the terminal wraps long lines
    assert (
        f'3 inputs failed: each has an error record in {out} (status "error")' in said
    )
    docs = lines(out)
    assert [Path(d.get("file") or d["source"]).name for d in docs] == [
        "a-good.json", "bad-date.json", "no-patient.json", "not-json.json",
        "z-good.json",
    ]  # fmt: skip
    assert [d["status"] for d in docs] == ["complete"] + ["error"] * 3 + ["complete"]
    assert docs[0]["case_id"] == "pa"
    assert {d["id"] for d in docs[0]["diagnoses"]} == {"hypertension"}
    assert [d["file"] for d in docs[1:4]] == [
        str(broken[k]) for k in ("bad_date", "no_patient", "not_json")
    ]
    assert "failures (error records) │ 3" in err


def test_a_line_equals_the_json_of_cdss_evaluate(tmp_path: Path) -> None:
    path = write_json(tmp_path / "b.json", bundle(hypertensive("pe")))
    out = tmp_path / "r.ndjson"
    assert run("batch", str(path), "--out", str(out), "--as-of", "2024-06-01")[0] == 0
    code, single, _ = run(
        "evaluate", str(path), "--format", "json", "--as-of", "2024-06-01"
    )
    assert code == 0
    assert lines(out) == [json.loads(single)]


def test_output_to_stdout_and_as_of_last_without_dates(tmp_path: Path) -> None:
    undated = write_json(tmp_path / "undated.json", bundle([patient("pu")]))
    dated = write_json(tmp_path / "dated.json", bundle(hypertensive("pd")))
    code, out, _ = run(
        "batch", str(dated), str(undated), "--out", "-", "--as-of", "last"
    )
    assert code == EXIT_BATCH_FAILED
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["case_id"] == "pd" and first["as_of"].startswith("2024-04-02")
    assert second["file"] == str(undated)
    assert "--as-of last: the record has no dated entries" in second["reason"]
    # The record was read, so its error line says which patient it is.
    assert second["case_id"] == "pu"


def test_inputs_that_name_nothing_are_refused_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "r.ndjson"
    code, _, err = run("batch", str(tmp_path / "nope"), "--out", str(out))
    assert code == EXIT_INPUT
    assert "no such file or folder" in err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    code, _, err = run("batch", str(tmp_path / "empty"), "--out", str(out))
    assert code == EXIT_INPUT
    assert "holds no input files" in err
    code, _, err = run("batch", str(tmp_path / "*.nothing"), "--out", str(out))
    assert code == EXIT_INPUT
    assert not out.exists()


def batch_arguments(*args: str) -> tuple[tuple[str, ...], str | None]:
    """The inputs and the --dask value that `cdss batch ARGS` runs with."""
    command = main.commands["batch"]
    with command.make_context("batch", list(args)) as ctx:
        return ctx.params["inputs"], ctx.params["dask_address"]


def test_dask_followed_by_an_input_is_a_local_cluster_and_that_input(
    tmp_path: Path,
) -> None:
    folder = many_cases(tmp_path / "data", 1)
    case = write_json(tmp_path / "one.json", bundle(hypertensive("d1")))
    pattern = str(tmp_path / "*.json")
    out = ("--out", str(tmp_path / "r.ndjson"))

    # As if --dask came after the inputs, whose order is kept.
    assert batch_arguments("--dask", str(folder), *out) == ((str(folder),), "local")
    assert batch_arguments(str(case), "--dask", str(folder), pattern, *out) == (
        (str(case), str(folder), pattern),
        "local",
    )
    assert batch_arguments("--dask", pattern, *out) == ((pattern,), "local")
    # An address stays an address; so does any value written with `=`.
    for address in ("tcp://127.0.0.1:8786", "scheduler:8786", str(tmp_path / "no")):
        assert batch_arguments(str(case), *out, "--dask", address) == (
            (str(case),),
            address,
        )
    assert batch_arguments(str(case), f"--dask={folder}", *out) == (
        (str(case),),
        str(folder),
    )
    assert batch_arguments(str(case), *out, "--dask") == ((str(case),), "local")
    assert batch_arguments(*out, "--dask", "--", str(case)) == ((str(case),), "local")
    # The value of another option is left to that option.
    assert batch_arguments(str(case), "--rules", "--dask", *out) == ((str(case),), None)


# --- NDJSON and bulk export ---------------------------------------------------------


def test_a_batch_that_fails_before_its_first_line_leaves_the_out_file_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Dask scheduler that could not be reached emptied an earlier results
    # file before failing.
    import cli

    def unreachable(*_args: Any, **_kwargs: Any) -> Any:
        cli._fail("Dask: cannot connect to tcp://127.0.0.1:1", 2)

    monkeypatch.setattr(cli, "_run_batch", unreachable)
    path = write_json(tmp_path / "p.json", bundle(hypertensive("p")))
    out = tmp_path / "r.ndjson"
    out.write_text("earlier results\n", encoding="utf-8")
    code, _, err = run("batch", str(path), "--out", str(out))
    assert code == 2 and "cannot connect" in err
    assert out.read_text(encoding="utf-8") == "earlier results\n"


def test_an_empty_input_says_it_held_no_cases(tmp_path: Path) -> None:
    path = tmp_path / "empty.ndjson"
    path.write_text("\n\n", encoding="utf-8")
    out = tmp_path / "r.ndjson"
    code, _, err = run("batch", str(path), "--out", str(out))
    assert code == 0
    assert "the inputs hold no cases" in err
    assert out.read_text() == ""  # created, though nothing was written


def test_case_files_without_an_id_in_ndjson_are_told_apart_by_line(
    tmp_path: Path,
) -> None:
    # Both lines were "cases": results could not be joined back to the input.
    text = json.dumps({"patient": {"age": 61, "sex": "male"}}) + "\n"
    path = tmp_path / "cases.ndjson"
    path.write_text(text * 2, encoding="utf-8")
    out = tmp_path / "r.ndjson"
    run("batch", str(path), "--out", str(out), "--as-of", "2024-06-01")
    assert [d["case_id"] for d in lines(out)] == ["cases:1", "cases:2"]


def test_ndjson_of_bundles_and_case_files_names_the_bad_line(tmp_path: Path) -> None:
    case_file = {
        "id": "case-7",
        "patient": {"age": 61, "sex": "male"},
        "facts": {"systolic_bp": "150 mmHg @ 2024-01-10"},
    }
    bad_case = {"id": "case-8", "patient": {"age": 61}, "facts": {"hba1c": "7 kg"}}
    path = tmp_path / "cases.ndjson"
    path.write_text(
        "\n".join(
            [
                json.dumps(bundle(hypertensive("n1"))),
                "",
                json.dumps(case_file),
                "this is not json",
                json.dumps(bad_case),
                json.dumps(patient("alone")),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    out = tmp_path / "r.ndjson"
    code, _, _ = run("batch", str(path), "--out", str(out), "--as-of", "2024-06-01")
    assert code == EXIT_BATCH_FAILED
    docs = lines(out)
    assert [d.get("case_id") for d in docs[:2]] == ["n1", "case-7"]
    assert docs[0]["source"] == f"{path}:1"
    assert docs[1]["source"] == f"{path}:3"
    assert [(d["file"], d["line"]) for d in docs[2:]] == [
        (str(path), n) for n in (4, 5, 6)
    ]
    assert "got text" in docs[2]["reason"]
    assert "hba1c" in docs[3]["reason"] and "kg" in docs[3]["reason"]
    # The first line is a Bundle: a lone Patient later is refused, not grouped.
    assert "expected a Bundle, got Patient" in docs[4]["reason"]
    assert len(docs) == 5
    # Assessments and error records alike follow `cdss schema --batch`.
    code, schema, _ = run("schema", "--batch")
    assert code == 0
    for doc in docs:
        jsonschema.validate(doc, json.loads(schema))


def test_the_progress_total_counts_the_lines_written_not_blank_ones(
    tmp_path: Path, settings: Settings
) -> None:
    path = tmp_path / "cases.ndjson"
    one = json.dumps(bundle(hypertensive("nb")))
    # Blank lines of every kind the reader skips; the last line has no newline.
    path.write_text(
        f"\n{one}\n\n   \n{one}\r\n\t\r\n{one}\n\n\n{one}", encoding="utf-8"
    )
    case_file = write_json(tmp_path / "one.json", bundle(hypertensive("nc")))
    plan = plan_inputs([path, case_file])
    totals: list[int] = []
    out = io.StringIO()

    summary = run_batch(plan, out, settings, progress=lambda s: totals.append(s.total))

    written = len(out.getvalue().splitlines())
    assert written == 5
    assert plan.estimate() == summary.total == written
    assert totals and set(totals) == {written}

    # The progress bar ends at 5/5, not 5/11.
    code, _, err = run(
        "batch", str(path), str(case_file), "--out", str(tmp_path / "r.ndjson")
    )
    assert code == 0
    assert " 5/5 " in err and "/11" not in err


def test_a_bulk_export_total_counts_patients_then_the_error_records_found(
    tmp_path: Path, settings: Settings
) -> None:
    folder = bulk_export(tmp_path / "export")
    for name in ("Patient.ndjson", "Observation.ndjson"):
        file = folder / name
        file.write_text("\n \n" + file.read_text(encoding="utf-8") + "\n\n")
    plan = plan_inputs([folder])
    totals: list[int] = []
    out = io.StringIO()

    summary = run_batch(plan, out, settings, progress=lambda s: totals.append(s.total))

    # The estimate reads only Patient.ndjson: its two patients. Grouping finds
    # three error records in the other files; the total then counts them.
    assert plan.estimate() == 2
    assert summary.total == len(out.getvalue().splitlines()) == 5
    assert totals[-1] == 5


def test_a_stop_while_a_bulk_export_is_grouped_is_an_interruption(
    tmp_path: Path, settings: Settings
) -> None:
    # Ctrl-C before the first chunk, while the export is still being grouped
    # by patient: nothing is written, and the batch says it was interrupted
    # (it reported success with an empty file).
    folder = bulk_export(tmp_path / "export")
    out = io.StringIO()
    summary = run_batch(plan_inputs([folder]), out, settings, stop=lambda: True)
    assert summary.interrupted
    assert out.getvalue() == ""


def bulk_export(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)

    def ndjson(name: str, rows: list[Any]) -> None:
        text = "".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in rows)
        (folder / name).write_text(text, encoding="utf-8")

    p1, p2 = hypertensive("b1"), hypertensive("b2")
    medication, request = metformin("b1")
    ghost = bp("g1", "ghost", 120, 70, "2024-03-01T09:30:00+00:00")
    no_subject = bp("x1", "b1", 120, 70, "2024-03-01T09:30:00+00:00")
    del no_subject["subject"]
    ndjson("Patient.ndjson", [p1[0], p2[0]])
    ndjson(
        "Observation.ndjson",
        [p1[1], p2[1], "{broken\n", no_subject, p1[2], ghost, p2[2]],
    )
    ndjson(
        "Condition.ndjson",
        [
            {
                "resourceType": "Condition",
                "id": "c1",
                "subject": {"reference": "Patient/b2"},
                "clinicalStatus": {"coding": [{"code": "active"}]},
                "code": {"coding": [{"system": SNOMED, "code": "59621000"}]},
                "onsetDateTime": "2019-11-02",
            }
        ],
    )
    ndjson("MedicationRequest.ndjson", [request])
    ndjson("Medication.ndjson", [medication])
    ndjson("Claim.ndjson", [{"resourceType": "Claim", "id": "cl1"}])
    return folder


def metformin(pid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Medication and a request that refers to it."""
    rxnorm = "http://www.nlm.nih.gov/research/umls/rxnorm"
    code = {"system": rxnorm, "code": "860975", "display": "Metformin 500 MG"}
    medication = {"resourceType": "Medication", "id": "m1", "code": {"coding": [code]}}
    request = {
        "resourceType": "MedicationRequest",
        "id": f"{pid}-rx",
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"Patient/{pid}"},
        "medicationReference": {"reference": "Medication/m1"},
        "authoredOn": "2020-02-03T08:00:00+00:00",
    }
    return medication, request


def test_bulk_export_is_grouped_by_patient_and_every_bad_line_is_named(
    tmp_path: Path, settings: Settings
) -> None:
    folder = bulk_export(tmp_path / "export")
    out = tmp_path / "r.ndjson"
    code, _, _ = run("batch", str(folder), "--out", str(out), "--as-of", "2024-06-01")
    assert code == EXIT_BATCH_FAILED
    docs = lines(out)
    obs = str(folder / "Observation.ndjson")
    assert [(d["file"], d["line"]) for d in docs[:2]] == [(obs, 3), (obs, 4)]
    assert docs[0]["reason"].startswith("not JSON")
    assert "no subject.reference" in docs[1]["reason"]
    assert [d["case_id"] for d in docs[2:4]] == ["b1", "b2"]
    assert docs[2]["source"] == f"{folder / 'Patient.ndjson'}:1"
    assert docs[3]["patient"]["conditions"] == ["hypertension"]
    assert docs[4]["case_id"] == "ghost"
    assert (docs[4]["file"], docs[4]["line"]) == (obs, 6)
    assert "no Patient resource of the export" in docs[4]["reason"]
    assert len(docs) == 5

    # The same patient as one bundle evaluates the same way.
    kb = settings.knowledge_base.load()
    medication, request = metformin("b1")
    one = {
        **bundle([*hypertensive("b1"), request]),
        "entry": [
            *bundle([*hypertensive("b1"), request])["entry"],
            {"fullUrl": "Medication/m1", "resource": medication},
        ],
    }
    # --as-of 2024-06-01 is the end of that day.
    end_of_day = AS_OF.replace(hour=23, minute=59, second=59)
    assert docs[2]["as_of"] == "2024-06-01T23:59:59Z"
    alone = json.loads(kb.evaluate(one, as_of=end_of_day).model_dump_json())
    assert {**docs[2], "source": "<bundle>"} == alone
    assert alone["patient"]["medications"] == ["metformin"]
    assert alone["patient"]["readings"] >= 4 and alone["diagnoses"]


def test_a_second_patient_and_a_group_subject_are_named_in_a_bulk_export(
    tmp_path: Path, settings: Settings
) -> None:
    folder = bulk_export(tmp_path / "export")
    with (folder / "Patient.ndjson").open("a", encoding="utf-8") as f:
        f.write(json.dumps(patient("b1")) + "\n")
    group = bp("grp", "b1", 120, 70, "2024-03-01T09:30:00+00:00")
    group["subject"] = {"reference": "Group/g1"}
    with (folder / "Observation.ndjson").open("a", encoding="utf-8") as f:
        f.write(json.dumps(group) + "\n")
    out = io.StringIO()
    run_batch(plan_inputs([folder]), out, settings)
    errors = [json.loads(x) for x in out.getvalue().splitlines() if '"error"' in x]
    second = next(e for e in errors if "a second Patient/b1" in e["reason"])
    assert second["case_id"] == "b1"
    assert second["line"] == 3
    [grouped] = [e for e in errors if "Group" in e["reason"]]
    assert grouped["reason"] == "the Observation is about `Group/g1`, not a Patient"


def test_a_file_that_starts_with_an_unread_type_is_still_searched(
    tmp_path: Path, settings: Settings
) -> None:
    # A file mixing types (not what the bulk specification allows) whose first
    # line is an Encounter: its Observations were skipped with the file.
    folder = bulk_export(tmp_path / "export")
    ours = hypertensive("b1")[1:]  # b1's two blood pressures, again
    for row in ours:
        row["id"] += "-again"
    encounter = {"resourceType": "Encounter", "id": "e1"}
    (folder / "part-2.ndjson").write_text(
        "".join(json.dumps(r) + "\n" for r in [encounter, *ours]), encoding="utf-8"
    )
    out = io.StringIO()
    run_batch(plan_inputs([folder]), out, settings)
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    [b1] = [d for d in docs if d.get("case_id") == "b1" and "patient" in d]

    # A file of unread types only is still skipped unread.
    (folder / "part-2.ndjson").write_text(json.dumps(encounter) + "\n")
    out = io.StringIO()
    run_batch(plan_inputs([folder]), out, settings)
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    [alone] = [d for d in docs if d.get("case_id") == "b1" and "patient" in d]
    # Two more blood pressures: a systolic and a diastolic reading each.
    assert b1["patient"]["readings"] == alone["patient"]["readings"] + 4


def test_earlier_results_among_the_inputs_are_named_as_results(tmp_path: Path) -> None:
    folder = tmp_path / "clinic"
    folder.mkdir()
    (folder / "p.json").write_text(json.dumps(bundle(hypertensive("p"))))
    args = ("--as-of", "2024-06-01")
    assert (
        run("batch", str(folder), "--out", str(folder / "monday.ndjson"), *args)[0] == 0
    )
    out = tmp_path / "tuesday.ndjson"

    code, _, _ = run("batch", str(folder), "--out", str(out), *args)

    assert code == EXIT_BATCH_FAILED
    old, new = lines(out)
    assert old["file"] == str(folder / "monday.ndjson") and old["line"] == 1
    assert "this is a cdss result (an assessment" in old["reason"]
    assert new["case_id"] == "p"


def test_a_broken_first_line_does_not_decide_what_an_export_file_is(
    tmp_path: Path,
) -> None:
    folder = bulk_export(tmp_path / "export")
    patients = folder / "Patient.ndjson"
    patients.write_text("{oops\n" + patients.read_text(encoding="utf-8"))
    out = tmp_path / "r.ndjson"

    code, _, _ = run("batch", str(folder), "--out", str(out), "--as-of", "2024-06-01")

    assert code == EXIT_BATCH_FAILED
    docs = lines(out)
    broken = [d for d in docs if d.get("file") == str(patients)]
    assert [(d["line"], d["reason"][:8]) for d in broken] == [(1, "not JSON")]
    assert {d["case_id"] for d in docs if d["status"] != "error"} == {"b1", "b2"}


def test_bulk_grouping_through_many_shards_gives_the_same_lines(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = bulk_export(tmp_path / "export")
    one = io.StringIO()
    run_batch(plan_inputs([folder]), one, settings)
    monkeypatch.setattr("engine.bulk.SHARD_BYTES", 1)  # a shard per patient
    many = io.StringIO()
    run_batch(plan_inputs([folder]), many, settings)
    assert many.getvalue() == one.getvalue()
    assert len(one.getvalue().splitlines()) == 5


# --- workers, chunks, interruption ---------------------------------------------------


def many_cases(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_json(folder / f"case-{i:03}.json", bundle(hypertensive(f"m{i:03}")))
    return folder


def test_any_worker_count_writes_the_same_bytes(
    tmp_path: Path, settings: Settings
) -> None:
    folder = many_cases(tmp_path / "in", 2 * CHUNK_SIZE + 3)
    broken_files(folder)
    outputs = []
    for workers in (1, 2, 3):
        out = io.StringIO()
        summary = run_batch(plan_inputs([folder]), out, settings, workers=workers)
        assert (summary.cases, summary.failures) == (2 * CHUNK_SIZE + 6, 3)
        outputs.append(out.getvalue())
    assert outputs[0] == outputs[1] == outputs[2]
    assert summary.diagnoses == {"hypertension": 2 * CHUNK_SIZE + 3}


def test_a_chunk_evaluates_as_its_cases_do_one_by_one(settings: Settings) -> None:
    kb = settings.knowledge_base.load()
    cases = [
        read_input_data(bundle(hypertensive(f"c{i}")), source=f"c{i}") for i in range(3)
    ]
    chunk = evaluate_cases(kb, cases, AS_OF)
    assert [a.model_dump() for a in chunk] == [
        evaluate_case(kb, c, AS_OF).model_dump() for c in cases
    ]
    with pytest.raises(EvaluationError, match="one time per case"):
        evaluate_cases(kb, cases, [AS_OF])


@needs_shared
def test_scores_of_a_chunk_match_the_scores_of_single_cases(settings: Settings) -> None:
    kb = settings.knowledge_base.load()
    cases = [read_input(p) for p in BUNDLES[:40]]
    times = [c.last_recorded or AS_OF for c in cases]
    chunk = evaluate_cases(kb, cases, times)
    scored = 0
    for case, when, together in zip(cases, times, chunk, strict=True):
        alone = kb.evaluate(case, as_of=when)
        for a, b in zip(alone.scores, together.scores, strict=True):
            assert (a.name, a.missing) == (b.name, b.missing)
            if a.value is not None:
                scored += 1
                assert b.value == pytest.approx(a.value, rel=1e-12, abs=1e-15)
        assert [d.id for d in alone.diagnoses] == [d.id for d in together.diagnoses]
    assert scored > 0


def test_stop_leaves_whole_lines_and_says_how_far_it_got(
    tmp_path: Path, settings: Settings
) -> None:
    folder = many_cases(tmp_path / "in", 3 * CHUNK_SIZE)
    out = tmp_path / "r.ndjson"
    seen: list[int] = []
    with out.open("w", encoding="utf-8") as f:
        summary = run_batch(
            plan_inputs([folder]),
            f,
            settings,
            progress=lambda s: seen.append(s.cases),
            stop=lambda: bool(seen),
        )
    assert summary.interrupted
    assert summary.cases == CHUNK_SIZE == len(lines(out))
    assert summary.last == str(folder / f"case-{CHUNK_SIZE - 1:03}.json")


def _poisoned_read(item: WorkItem, catalogue: Any) -> Any:
    if item.file.endswith("case-005.json"):
        os._exit(3)  # the worker process dies on this input
    return _real_read(item, catalogue)


_real_read = WorkItem.read


def test_an_input_that_kills_its_worker_gets_an_error_line_and_the_rest_go_on(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = many_cases(tmp_path / "in", CHUNK_SIZE + 4)
    monkeypatch.setattr(WorkItem, "read", _poisoned_read)  # forked workers too
    out = io.StringIO()
    pool = ProcessPool(settings, 2, start_method="fork")
    try:
        summary = run_batch(plan_inputs([folder]), out, settings, backend=pool)
    finally:
        pool.close()
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(docs) == CHUNK_SIZE + 4
    assert summary.failures == 1
    dead = docs[5]
    assert dead["file"].endswith("case-005.json") and dead["error"] == "worker"
    assert dead["notice"].startswith("Decision support only")
    assert "worker process ended" in dead["reason"]
    assert [d["case_id"] for d in docs[:5] + docs[6:]] == [
        f"m{i:03}" for i in range(CHUNK_SIZE + 4) if i != 5
    ]


def long_batch(
    tmp_path: Path, workers: int, *options: str
) -> tuple[subprocess.Popen[str], Path, Path]:
    """A batch of 20,000 cases in a process group of its own, once it has written.

    A Ctrl-C at a terminal reaches the whole group: ``os.killpg``.
    """
    path = tmp_path / "many.ndjson"
    line = json.dumps(bundle(hypertensive("cc"))) + "\n"
    path.write_text(line * 20_000, encoding="utf-8")
    out = tmp_path / f"r{workers}.ndjson"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "batch", str(path), "--out", str(out)]
        + ["--workers", str(workers), "--as-of", "2024-06-01", *options],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120  # a Dask cluster takes a while to start
    while (not out.exists() or out.stat().st_size == 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc, path, out


def test_ctrl_c_leaves_a_valid_partial_file_and_exit_130(tmp_path: Path) -> None:
    proc, path, out = long_batch(tmp_path, workers=1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    err = flat(err)
    assert proc.returncode == EXIT_INTERRUPTED, err
    docs = lines(out)
    assert 0 < len(docs) < 20_000
    assert {d["case_id"] for d in docs} == {"cc"}
    assert f"{len(docs)} of about 20000 cases written" in err
    assert f"the last was {path}:{len(docs)}" in err


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux /proc")
def test_sigterm_stops_like_ctrl_c_and_leaves_no_worker(tmp_path: Path) -> None:
    # timeout(1), systemd and CI runners stop a job with SIGTERM, often to its
    # whole process group: the worker processes were left running.
    proc, path, out = long_batch(tmp_path, workers=2)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    err = flat(err)
    assert proc.returncode == EXIT_TERMINATED, err
    docs = lines(out)
    assert 0 < len(docs) < 20_000
    assert f"terminated: {len(docs)} of about 20000 cases written" in err
    deadline = time.monotonic() + 10
    while _running_with(str(out)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _running_with(str(out)) == []


def _running_with(text: str) -> list[int]:
    """Processes whose command line holds the text (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux /proc")
def test_a_second_ctrl_c_quits_at_once_and_stops_the_workers(tmp_path: Path) -> None:
    proc, _path, out = long_batch(tmp_path, workers=2)

    proc.send_signal(signal.SIGINT)
    time.sleep(0.1)  # while the chunks in progress are still running
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)

    # Either the second Ctrl-C quit at once, or the first had already stopped
    # the batch by then: the same exit code either way, and no worker left.
    assert proc.returncode == EXIT_INTERRUPTED, flat(err)
    assert "quitting now" in flat(err) or "cases written to" in flat(err)
    deadline = time.monotonic() + 10
    while _running_with(str(out)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _running_with(str(out)) == []
    text = out.read_text(encoding="utf-8")
    whole = text.splitlines()[:-1] if not text.endswith("\n") else text.splitlines()
    assert all(json.loads(doc)["case_id"] == "cc" for doc in whole)


# --- pieces ------------------------------------------------------------------------


def test_the_summary_table_counts_what_the_lines_say() -> None:
    summary = BatchSummary(total=3, cases=3, failures=1, elapsed=1.5)
    summary.statuses.update({"complete": 2, "error": 1})
    summary.diagnoses.update({"hypertension": 2})
    summary.recommendations.update(
        {("start_metformin", "recommended"): 2, ("start_metformin", "blocked"): 1}
    )
    summary.undetermined.update({"bp_stage_2": 1})
    buffer = io.StringIO()
    render_batch(summary, Console(file=buffer, width=100))
    text = buffer.getvalue()
    assert "│ failures (error records) │ 1" in text
    assert "│ hypertension │     2 │" in text
    assert "│ start_metformin │           2 │       1 │" in text
    assert "│ bp_stage_2 │     1 │" in text


def test_json_that_orjson_refuses_reads_as_with_the_stdlib() -> None:
    # NaN is refused by FHIR (the reader), not by the parser: same message.
    text = json.dumps(bundle(hypertensive("nan"))).replace("152", "NaN", 1)
    with pytest.raises(InputError) as info:
        read_input_data(text, source="t")
    assert info.value.where.endswith("valueQuantity.value")
    assert info.value.reason.startswith("Input should be a finite number")
    # A number beyond 64 bits: orjson reads a float, the stdlib an int that the
    # reader turns into the same float.
    text = json.dumps(bundle(hypertensive("big"))).replace("152", "1" + "0" * 25, 1)
    fast = read_input_data(text, source="t")
    assert fast == read_input_data(json.loads(text), source="t")
    assert fast.readings["systolic_bp"][0].value == 1e25
    with pytest.raises(InputError) as info:
        read_input_data('{"resourceType": "Bundle", "entry": [', source="t")
    assert info.value.where == "line 1, column 38"


def test_library_evaluate_many_equals_one_by_one(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from engine import KnowledgeBase, read_input

    kb = KnowledgeBase.load()
    example = (
        Path(__file__).resolve().parents[1] / "examples" / "case-diabetic-ckd.yaml"
    )
    cases = [read_input(example)] * 3
    when = datetime(2024, 4, 30, tzinfo=UTC)
    many = kb.evaluate_many(cases, as_of=when)
    one = kb.evaluate(cases[0], as_of=when)
    assert [m.rules_fired for m in many] == [one.rules_fired] * 3
    assert [d.id for d in many[0].diagnoses] == [d.id for d in one.diagnoses]


def test_an_output_in_a_missing_folder_says_to_create_it(tmp_path: Path) -> None:
    out = tmp_path / "nowhere" / "r.ndjson"
    example = (
        Path(__file__).resolve().parents[1] / "examples" / "case-diabetic-ckd.yaml"
    )
    code, _, err = run("batch", str(example), "--out", str(out))
    assert code == 2
    said = " ".join(err.split())
    assert f"the folder {out.parent} does not exist: create it first" in said


def test_an_output_that_is_one_of_the_inputs_is_refused_and_left_intact(
    tmp_path: Path,
) -> None:
    case = tmp_path / "c3.yaml"
    text = "patient: {age: 50, sex: female}\nfacts: {systolic_bp: 150 mmHg}\n"
    case.write_text(text, encoding="utf-8")
    code, out, err = run("batch", str(case), "--out", str(case))
    assert code == 2 and out == ""
    assert "is also one of the inputs" in " ".join(err.split())
    assert case.read_text(encoding="utf-8") == text
    # Reached through a folder and another spelling of the same path, too.
    code, _, _ = run("batch", str(tmp_path), "--out", str(tmp_path / "." / "c3.yaml"))
    assert code == 2 and case.read_text(encoding="utf-8") == text
    # A hard link is the same file under another name.
    linked = tmp_path / "out" / "results.ndjson"
    linked.parent.mkdir()
    os.link(case, linked)
    code, _, _ = run("batch", str(case), "--out", str(linked))
    assert code == 2 and case.read_text(encoding="utf-8") == text


def test_files_in_a_folder_that_are_not_inputs_are_named(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write_json(folder / "a-good.json", bundle(hypertensive("pa")))
    (folder / "notes.txt").write_text("not a patient", encoding="utf-8")
    out = tmp_path / "r.ndjson"
    code, _, err = run("batch", str(folder), "--out", str(out), "--as-of", "2024-06-01")
    assert code == 0
    assert len(lines(out)) == 1
    said = " ".join(err.split())
    assert "1 file not read (not .json, .yaml, .yml, .ndjson or .jsonl): " in said
    assert said.count("notes.txt") == 1
