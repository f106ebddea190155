"""The artifacts app: a FastAPI app the Airflow api-server mounts at /taxi (an Airflow 3 plugin app).

What the local platform's extra links open, behind the Airflow login (the api-server's JWT cookie):
    /taxi/                     index: the DAGs' runs and their reports, the served models
    /taxi/artifacts/<path>     a file of $TAXI_HOME/artifacts, or a folder listing (read-only)
    /taxi/serving/             the served models
    /taxi/serving/<model>      a served model's status: versions, labels, what models.config loads,
                               the deployment (and rollback) records
Only the artifact root is served (never the warehouse or the Airflow home); hidden names (staging
folders) and paths that resolve outside the root are refused, and a link that leaves the root is not
even listed (listings read each entry with lstat; an entry that cannot be read is left out, never
failing its listing). HTML is served with a sandboxing Content-Security-Policy, so an artifact's
page cannot act as the Airflow UI, and every response says `X-Content-Type-Options: nosniff`.
"""

from __future__ import annotations

import html
import mimetypes
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

TEXT_SUFFIXES = {".txt", ".json", ".csv", ".config", ".md", ".log", ".pbtxt", ".sql"}
# GX's Data Docs need scripts and open links in new tabs; nothing needs a popup to leave the sandbox
SANDBOX = "sandbox allow-scripts allow-popups"
STYLE = """<style>body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1100px;padding:0 16px;color:#1d2733}
table{border-collapse:collapse}td,th{border:1px solid #d9dee5;padding:4px 10px;text-align:left}
th{background:#f3f5f8}.r{text-align:right}.tag{background:#e8eef7;border-radius:4px;padding:1px 6px;margin-left:4px}
</style>"""


def _require_login():
    """Airflow's authentication (JWT bearer or the UI's cookie); none outside an api-server."""
    try:
        from airflow.api_fastapi.core_api.security import requires_authenticated
    except ImportError:  # pragma: no cover
        return []
    return [Depends(requires_authenticated())]


def _settings():
    from taxi_pipeline.settings import get_settings

    return get_settings()


def resolve_inside(root: Path, relative: str) -> Path:
    """`root/relative`, refusing hidden names, '..' and anything that resolves outside `root`."""
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    if any(p.startswith(".") or "\\" in p or "\x00" in p for p in parts):
        raise HTTPException(404, "not found")
    root = root.resolve()
    target = root.joinpath(*parts).resolve()
    if target != root and root not in target.parents:
        raise HTTPException(404, "not found")
    if not target.exists():
        raise HTTPException(404, f"no artifact {relative!r}")
    return target


def inside(root: Path, path: Path) -> bool:
    """Whether `path` (after links) is `root` or below it: a link that leaves the root is not shown."""
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):  # dangling or looping link, or gone since it was listed
        return False
    root = root.resolve()
    return target == root or root in target.parents


def page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"{STYLE}</head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def _entries(root: Path, directory: Path):
    """(path, lstat, is a folder) of each entry of a listing: hidden names, links that leave the root
    and entries that cannot be read (gone meanwhile, a dangling link) are left out."""
    import stat

    for entry in directory.iterdir():
        if entry.name.startswith("."):
            continue
        try:
            info = entry.lstat()
            if stat.S_ISLNK(info.st_mode):
                if not inside(root, entry):
                    continue
                info = entry.stat()  # a link within the root: what it points at
        except OSError:
            continue
        yield entry, info, stat.S_ISDIR(info.st_mode)


def _size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def listing(root: Path, directory: Path) -> HTMLResponse:
    relative = directory.relative_to(root.resolve()).as_posix()
    relative = "" if relative == "." else relative
    crumbs = ['<a href="/taxi/artifacts/">artifacts</a>']
    for i, part in enumerate(relative.split("/") if relative else []):
        crumbs.append(
            f'<a href="/taxi/artifacts/{quote("/".join(relative.split("/")[: i + 1]))}/">{html.escape(part)}</a>'
        )
    rows = []
    for entry, info, is_dir in sorted(_entries(root, directory), key=lambda e: (not e[2], e[0].name)):
        href = "/taxi/artifacts/" + quote(f"{relative}/{entry.name}".lstrip("/")) + ("/" if is_dir else "")
        modified = datetime.fromtimestamp(info.st_mtime, UTC).strftime("%Y-%m-%d %H:%M")
        rows.append(
            f'<tr><td><a href="{href}">{html.escape(entry.name)}{"/" if is_dir else ""}</a></td>'
            f'<td class="r">{"" if is_dir else _size(info.st_size)}</td><td>{modified}</td></tr>'
        )
    reports = [
        name
        for name in ("reports/data.html", "reports/model.html", "history.html", "comparison.txt")
        if (directory / name).exists()
    ]
    shortcut = (
        (
            "<p>"
            + " · ".join(
                f'<a href="/taxi/artifacts/{quote(f"{relative}/{name}".lstrip("/"))}">{html.escape(name)}</a>'
                for name in reports
            )
            + "</p>"
        )
        if reports
        else ""
    )
    return page(
        f"/{relative}" if relative else "artifacts",
        "<p>"
        + " / ".join(crumbs)
        + "</p>"
        + shortcut
        + "<table><tr><th>name</th><th>size</th><th>modified (UTC)</th></tr>"
        + "".join(rows)
        + "</table>",
    )


def serve_file(path: Path):
    suffix = path.suffix.lower()
    if suffix in (".html", ".htm"):
        return FileResponse(path, media_type="text/html", headers={"Content-Security-Policy": SANDBOX})
    if suffix in TEXT_SUFFIXES:
        return FileResponse(path, media_type="text/plain; charset=utf-8")
    media = mimetypes.guess_type(path.name)[0]
    if media in ("image/png", "image/jpeg", "image/svg+xml"):
        return FileResponse(path, media_type=media, headers={"Content-Security-Policy": SANDBOX})
    return FileResponse(path, media_type="application/octet-stream", filename=path.name)


def model_status(serving_root: str, model: str) -> dict:
    """What is served of `model`: its versions (with their records), labels and what the config loads."""
    from taxi_pipeline import files
    from taxi_pipeline.serving_root import ServingRoot

    root = ServingRoot(serving_root)
    versions = root.versions(model)
    records = {version: root.record(model, version) or {} for version in versions}
    config = files.join(serving_root, "models.config")
    loaded = []
    if files.exists(config):
        text = files.read_text(config)
        block = text.split(f'name: "{model}"', 1)[1].split("config {", 1)[0] if f'name: "{model}"' in text else ""
        loaded = [int(v) for v in __import__("re").findall(r"versions: (\d+)", block)]
    return {
        "model": model,
        "versions": versions,
        "labels": root.labels(model),
        "loaded": loaded,
        "records": records,
        "rollbacks": root.rollbacks(model),
    }


def status_page(status: dict) -> HTMLResponse:
    labels_by_version: dict[int, list[str]] = {}
    for label, version in status["labels"].items():
        labels_by_version.setdefault(version, []).append(label)
    newest = status["versions"][-1] if status["versions"] else None
    rows = []
    for version in reversed(status["versions"]):
        record = status["records"].get(version, {})
        metrics = record.get("metrics", {})
        tags = "".join(f'<span class="tag">{html.escape(t)}</span>' for t in labels_by_version.get(version, []))
        if version == newest:
            tags += '<span class="tag">newest</span>'
        auc = metrics.get("auc")
        rows.append(
            f"<tr><td>{version}{tags}</td><td>{'yes' if version in status['loaded'] else 'no'}</td>"
            f"<td>{html.escape(str(record.get('variant', '')))}</td>"
            f"<td>{html.escape(str(record.get('window', '')))}</td>"
            f"<td class='r'>{'' if auc is None else f'{auc:.4f}'}</td>"
            f"<td>{html.escape(str(record.get('run_id', '')))}</td></tr>"
        )
    stable = status["labels"].get("stable")
    head = (
        f"<p id='summary'>{len(status['versions'])} versions; newest <b>{newest}</b>"
        + (f"; label <b>stable</b> &rarr; <b>{stable}</b>" if stable else "")
        + "</p>"
    )
    rollbacks = "".join(
        f"<li>{html.escape(r.get('at', ''))}: {html.escape(str(r.get('from')))} &rarr; {html.escape(str(r.get('to')))}"
        f" ({html.escape(r.get('label', ''))}) by {html.escape(r.get('run_id', ''))}: "
        f"{html.escape(r.get('reason', ''))}</li>"
        for r in reversed(status["rollbacks"])
    )
    return page(
        f"Served model {status['model']}",
        head + "<table><tr><th>version</th><th>loaded</th><th>variant</th><th>window</th><th>AUC</th>"
        "<th>pushed by run</th></tr>"
        + "".join(rows)
        + "</table>"
        + (f"<h2>Rollbacks</h2><ul>{rollbacks}</ul>" if rollbacks else "")
        + "<p>Roll back with the DAG <a href='/dags/taxi_serving_rollback'>taxi_serving_rollback</a>.</p>"
        + "<p><a href='/taxi/serving/'>all served models</a></p>",
    )


def create_app(login: bool = True) -> FastAPI:
    """The app; `login=False` only for tests of its pages (the plugin's app always requires it)."""
    app = FastAPI(
        title="taxi-mlops artifacts",
        dependencies=_require_login() if login else [],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.middleware("http")
    async def no_sniffing(request, call_next):
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"  # a file is only ever what its type says
        return response

    @app.get("/", response_class=HTMLResponse)
    def index():
        root = Path(_settings().artifact_root)
        items = []
        dags = (
            [p for p in root.iterdir() if not p.name.startswith(".") and inside(root, p) and p.is_dir()]
            if (root.exists())
            else []
        )
        for dag in sorted(dags):
            runs = sorted(
                (r for r in dag.glob("window=*/run=*") if inside(root, r)),
                key=lambda p: p.stat().st_mtime,
                reverse=True,
            )[:10]
            links = "".join(
                f"<li><a href='/taxi/artifacts/{quote(r.relative_to(root).as_posix())}/'>"
                f"{html.escape(r.parent.name)} / {html.escape(r.name)}</a>"
                + "".join(
                    f" · <a href='/taxi/artifacts/{quote((r / 'reports' / k).relative_to(root).as_posix())}'>{k}</a>"
                    for k in ("data.html", "model.html")
                    if (r / "reports" / k).exists()
                )
                + "</li>"
                for r in runs
            )
            items.append(f"<h2>{html.escape(dag.name)}</h2><ul>{links or '<li>no run yet</li>'}</ul>")
        return page(
            "taxi-mlops artifacts", "".join(items) + "<h2>Serving</h2><p><a href='/taxi/serving/'>served models</a></p>"
        )

    @app.get("/artifacts/{relative:path}")
    def artifact(relative: str = ""):
        root = Path(_settings().artifact_root)
        if not root.exists():
            raise HTTPException(404, "no artifacts yet")
        target = resolve_inside(root, relative)
        return listing(root, target) if target.is_dir() else serve_file(target)

    @app.get("/serving/", response_class=HTMLResponse)
    def serving_index():
        from taxi_pipeline.serving_root import ServingRoot

        root = ServingRoot(_settings().serving_root)
        rows = "".join(
            f"<li><a href='/taxi/serving/{quote(m)}'>{html.escape(m)}</a> ({len(root.versions(m))} versions)</li>"
            for m in root.models()
        )
        return page("Served models", f"<ul>{rows or '<li>nothing served yet</li>'}</ul>")

    @app.get("/serving/{model}", response_class=HTMLResponse)
    def serving_model(model: str):
        root = Path(_settings().serving_root)
        if not root.exists():
            raise HTTPException(404, "nothing served yet")
        if not resolve_inside(root, model).is_dir():
            raise HTTPException(404, f"no served model {model!r}")
        return status_page(model_status(str(root), model))

    return app


app = create_app()
