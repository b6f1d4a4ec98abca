"""Keeping the report in MLflow: a study's page as an artifact of the study's parent run, a page of
runs or experiments as the artifact of a new ``report`` run (see :mod:`aepipe.evaluation.report`)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

#: artifact folder of the page in MLflow, and the tag of a run that holds a report
ARTIFACT_DIR, ROLE = "report", "report"


def publish(text: str, chosen: list[Any], tracker: Any) -> list[str]:
    """Log the page to each study's parent run, and, for runs not picked through a study, to a
    new ``report`` run in the experiment of the first of them; returns the runs written to."""
    written: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "report.html"
        path.write_text(text, encoding="utf-8")
        for parent in dict.fromkeys(p.study_run_id for p in chosen if p.study_run_id):
            tracker.open(parent).log_artifact(path, ARTIFACT_DIR)
            written.append(parent)
        loose = [p for p in chosen if not p.study_run_id]
        if loose:
            experiment = tracker.experiment_name(loose[0].run.info.experiment_id)
            ids = [p.run.info.run_id for p in loose]
            run = tracker.start(experiment, run_name="report", lease=False, tags={
                "aepipe.role": ROLE, "aepipe.report.runs": ",".join(ids),
                "mlflow.note.content": f"aepipe report of {len(ids)} run(s): artifact {ARTIFACT_DIR}/report.html"})
            try:
                run.log_artifact(path, ARTIFACT_DIR)
            except BaseException as exc:
                run.finish("FAILED", f"the report could not be stored: {exc}")
                raise
            run.finish("FINISHED")
            written.append(run.run_id)
    return written
