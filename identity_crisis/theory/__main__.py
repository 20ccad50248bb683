"""`python -m identity_crisis.theory [options]`: the same as `identity-crisis theory`."""

from identity_crisis.theory import main

main()
