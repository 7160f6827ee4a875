"""python -m worker.devtools.sandbox --host 127.0.0.1 --port 8765"""

import sys

from worker.devtools.sandbox.server import main

if __name__ == "__main__":
    sys.exit(main())
