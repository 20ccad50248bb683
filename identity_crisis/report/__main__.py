"""`python -m identity_crisis.report ...`: the same as `identity-crisis report ...`."""

from identity_crisis.report import main

main()
