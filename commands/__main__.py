"""``python -m infermatrix.commands ...`` = ``infermatrix ...``."""
import sys

from .main import main

sys.exit(main())
