"""taxi_serving_rollback: point serving back at an earlier version of a model, on demand.

Trigger it with the model, the target version (`previous`: the blessed version before the one in
service, or a version number such as 201601010000) and why. Newer versions are retired (kept under
`<model>/.retired/`, not deleted), the model's labels (`stable`) move to the target, `models.config`
is rewritten and the rollback is recorded with its reason in `<model>/rollbacks.json`; the model server
picks the change up on its next poll. A rerun with the same target changes nothing.

The next daily run's push serves a newer window again (a fix-forward); roll back again if needed.
"""
from __future__ import annotations

from datetime import datetime

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Param
from taxi_model.variants import VARIANTS

from taxi_pipeline.dag_defaults import DEFAULT_ARGS
from taxi_pipeline.pools import DEPLOY_POOL
from taxi_pipeline.rollback import PREVIOUS, rollback_task
from taxi_pipeline.serving import CHAMPION_MODEL, model_name
from taxi_plugins.links import ServedModelLink

ROLLBACK_DOC = """
### roll_back
Makes the target version the one the model serves: retires newer versions, moves the labels,
rewrites `models.config` and records the rollback (the "Served model" link shows the result).

**On failure**: the log says why in one line (no such model or version, nothing older to go back
to); nothing was changed. Trigger again with a valid target.
"""

with DAG(
    dag_id="taxi_serving_rollback",
    schedule=None,
    start_date=datetime(2014, 1, 1),
    max_active_runs=1,
    tags=["taxi", "serving", "on-call"],
    doc_md=__doc__,
    default_args={**DEFAULT_ARGS, "retries": 1},  # idempotent; a bad target fails at once (no retry)
    params={
        "model": Param(CHAMPION_MODEL, type="string", enum=[CHAMPION_MODEL, *(model_name(v) for v in VARIANTS)],
                       description="The served model to roll back (`taxi` is what clients use, at label `stable`)."),
        "target_version": Param(PREVIOUS, type="string", pattern=rf"^({PREVIOUS}|[0-9]{{12}})$",
                                description="`previous` (the blessed version before the one in service) or a "
                                            "version number YYYYMMDDHHMM."),
        "reason": Param("", type="string", minLength=10,
                        description="Why (recorded with the rollback), e.g. the incident or the bad metric."),
    },
) as dag:
    PythonOperator(task_id="roll_back", python_callable=rollback_task, doc_md=ROLLBACK_DOC, pool=DEPLOY_POOL,
                   ).operator_extra_links = [ServedModelLink()]
