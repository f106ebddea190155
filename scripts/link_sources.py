"""Put the project's include/ and plugins/ on a virtualenv's import path (a .pth file).

Usage: python scripts/link_sources.py <venv>   (run with that venv's interpreter)
"""

import site
import sys
from pathlib import Path

repo = Path(__file__).resolve().parents[1]
site_packages = Path(next(p for p in site.getsitepackages() if p.endswith("site-packages")))
(site_packages / "taxi_mlops.pth").write_text(f"{repo / 'include'}\n{repo / 'plugins'}\n")
print(f"{sys.argv[1]}: {repo}/include and {repo}/plugins are on the import path")
