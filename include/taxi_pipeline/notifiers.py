"""The project's alerting: one notifier for failed tasks and for runs past their deadline.

`TaxiAlertNotifier` posts a JSON message (`{"text": ...}`, what Slack, Teams and most chat
webhooks accept) to the webhook of an Airflow connection, by default `taxi_alerts` (set
TAXI_ALERT_CONN_ID to use another). Configure it like any connection, e.g.

    AIRFLOW_CONN_TAXI_ALERTS='{"conn_type": "http", "host": "https://hooks.example.com/services/T0/B0/XXXX"}'

(`host` is the whole webhook URL, or a host name with `schema`/`port` and an `endpoint` in extra;
the URI form `AIRFLOW_CONN_TAXI_ALERTS='https://hooks.example.com/services/T0/B0/XXXX'` works too;
a `password` is sent as a bearer token). The webhook URL and the token are masked in task logs, and
no log line of a failed alert quotes the URL: a webhook's path is its secret. Only http(s) URLs are
posted to, and a request that carries a token follows no redirect (it would take the token along).

Without that connection it logs one clear line (`TAXI ALERT (no alert connection '...'): ...`)
and nothing else, so a fresh install works and a failure is still visible in the log. A webhook
that cannot be reached is logged too; an alert never fails the task or the callback itself.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from airflow.sdk import BaseNotifier

DEFAULT_CONN_ID = "taxi_alerts"


def alert_conn_id() -> str:
    return os.environ.get("TAXI_ALERT_CONN_ID") or DEFAULT_CONN_ID


def _run_dir(context) -> str | None:
    """Where the run's artifacts are (the report of a failed task is there)."""
    try:
        from taxi_pipeline.run_context import run_layout

        return run_layout(context).run_dir
    except Exception:  # noqa: BLE001 - a deadline callback has no task context to derive it from
        return None


def failure_message(context, message: str = "") -> str:
    """One paragraph for on-call: what failed, the error's first line, where to look."""
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    dag_id = getattr(context.get("dag"), "dag_id", None) or getattr(dag_run, "dag_id", None) or context.get("dag_id")
    run_id = context.get("run_id") or getattr(dag_run, "run_id", None)
    parts = [message] if message else []
    if ti is not None:
        error = context.get("exception")
        first = str(error).strip().splitlines()[0][:500] if error else "no exception recorded"
        parts.append(
            f"task {dag_id}.{ti.task_id} failed (run {run_id}, try {getattr(ti, 'try_number', '?')}): "
            f"{type(error).__name__ if error else 'failure'}: {first}"
        )
        log_url = getattr(ti, "log_url", None)
        if log_url:
            parts.append(f"log: {log_url}")
        run_dir = _run_dir(context) if context.get("params") is not None else None
        if run_dir:
            parts.append(f"artifacts: {run_dir}")
    elif dag_id or run_id:
        parts.append(f"DAG {dag_id}, run {run_id}")
    return " | ".join(parts) or "taxi-mlops alert"


class TaxiAlertNotifier(BaseNotifier):
    """Notifies on-call through the webhook of the `taxi_alerts` connection (see the module doc).

    As a task's `on_failure_callback`: `TaxiAlertNotifier()`. As a deadline alert's callback:
    `SyncCallback(TaxiAlertNotifier, kwargs={"message": ...})` (the executor instantiates it with
    the kwargs, then calls it with the context).
    """

    template_fields = ("message",)

    def __init__(self, message: str = "", conn_id: str | None = None, timeout: float = 10.0, **kwargs):
        super().__init__(**{k: v for k, v in kwargs.items() if k == "context"})
        self.message = message
        self.conn_id = conn_id
        self.timeout = timeout

    def _webhook(self) -> tuple[str, str | None] | None:
        """(url, token) of the alert connection, or None when no such connection is configured."""
        from airflow.sdk import Connection
        from airflow.sdk.exceptions import AirflowNotFoundException
        from airflow.sdk.log import mask_secret

        try:
            conn = Connection.get(self.conn_id or alert_conn_id())
        except AirflowNotFoundException:
            return None
        url = webhook_url(
            conn.conn_type, conn.host, conn.schema, conn.port, (conn.extra_dejson or {}).get("endpoint", "")
        )
        mask_secret(url)  # webhook URLs embed their secret
        path = urlsplit(url).path.strip("/")
        if path:
            mask_secret(path)
        if conn.password:
            mask_secret(conn.password)
        return url, conn.password or None

    def notify(self, context: Any) -> None:
        self.send(failure_message(context, self.message))

    def send(self, text: str) -> None:
        """Send `text` as it is (an alert that is not a task's failure, e.g. the serving monitor's)."""
        conn_id = self.conn_id or alert_conn_id()
        try:
            webhook = self._webhook()
        except Exception as error:  # noqa: BLE001 - a broken alert setup must not hide the alert itself
            self.log.error("TAXI ALERT (connection %r unusable: %s): %s", conn_id, error, text)
            return
        if webhook is None:
            self.log.warning("TAXI ALERT (no alert connection %r configured, nobody notified): %s", conn_id, text)
            return
        url, token = webhook
        try:
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
                raise ValueError("the connection's webhook is not an http(s) URL")
            request = urllib.request.Request(
                url,
                data=json.dumps({"text": text}).encode(),
                method="POST",
                headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})},
            )
            opener = urllib.request.build_opener(*([_NoRedirect()] if token else []))
            with opener.open(request, timeout=self.timeout) as response:
                self.log.info("TAXI ALERT sent through connection %r (HTTP %s): %s", conn_id, response.status, text)
        except Exception as error:  # noqa: BLE001 - never the task's failure; never the URL in the log
            self.log.error(
                "TAXI ALERT could not be sent through connection %r (%s): %s", conn_id, _without(str(error), url), text
            )


def webhook_url(
    conn_type: str | None, host: str | None, schema: str | None, port: int | None, endpoint: str = ""
) -> str:
    """The webhook URL of a connection: its `host` when that is a whole URL; else built from the
    parts, with `schema` the scheme (http/https) or, in a connection given as a URI
    (`https://host/path`, which Airflow splits into conn_type, host and schema), the path."""
    host = (host or "").strip()
    if "://" in host:
        url = host
    else:
        scheme_in_schema = (schema or "") in ("http", "https")
        scheme = schema if scheme_in_schema else conn_type if conn_type in ("http", "https") else "https"
        path = "" if scheme_in_schema else (schema or "").strip("/")
        url = f"{scheme}://{host}{f':{port}' if port else ''}" + (f"/{path}" if path else "")
    if endpoint:
        url = url.rstrip("/") + "/" + endpoint.lstrip("/")
    return url


def _without(message: str, url: str) -> str:
    """An error message with the webhook's URL and path (its secret) taken out."""
    path = urlsplit(url).path.strip("/")
    for secret in filter(None, (url, path)):
        message = message.replace(secret, "<webhook>")
    return message


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: the request carries a bearer token, which must not follow it elsewhere."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise urllib.error.HTTPError(
            req.full_url, code, f"redirect refused ({msg}): the alert carries a token", headers, fp
        )
