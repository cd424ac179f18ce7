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
