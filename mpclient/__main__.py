import sys

from mpclient.cli import main

sys.exit(main())
