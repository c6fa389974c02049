"""README holds the seed's commands verbatim (utils/seed_commands.py, the copy every test and recipe reads)."""
from pathlib import Path

from utils.seed_commands import SEED_COMMANDS

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_lists_every_seed_command_verbatim():
    text = README.read_text()
    missing = [f"{task}/{strategy}" for task, strategy, script, arguments in SEED_COMMANDS
               if f"python {script} {arguments}" not in text]
    assert not missing, f"README.md lacks these seed commands as written: {missing}"
