# Recipes for everything beyond the README's two Quick start commands.
venv := ".venv"
py := venv / "bin/python"

# Create the virtualenv with the dev tools.
setup:
    python3 -m venv {{venv}} && {{venv}}/bin/pip install -q -e '.[dev]'

# Lint and run the whole test suite (what CI runs).
test: setup
    {{venv}}/bin/ruff check .
    {{py}} -m pytest -q

# Lint only.
lint: setup
    {{venv}}/bin/ruff check .

# Hub vs nginx: 1 GiB blob and 1,000 small GETs over curl (installs nginx with apt if missing).
bench-hub: setup
    command -v nginx >/dev/null || test -x /usr/sbin/nginx || (apt-get update -qq && apt-get install -y -qq nginx) || (sudo apt-get update -qq && sudo apt-get install -y -qq nginx)
    {{py}} bench/hub.py
