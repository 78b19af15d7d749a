import sys

from ctrkernel.cli import main

sys.exit(main())
