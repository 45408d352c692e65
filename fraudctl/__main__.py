"""`python -m fraudctl ...` is `fraudctl ...` (the serving tests and benchmark start the server that way)."""
from fraudctl.main import main

main()
