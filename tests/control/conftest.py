import sys
from pathlib import Path

# Lets the test modules here import the shared ``harness`` module (importlib import mode).
sys.path.insert(0, str(Path(__file__).resolve().parent))
