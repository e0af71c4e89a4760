# The two commands of the README, and the quality gate CI runs before the tests. Everything else
# lives in scripts/.
.PHONY: run test check

run:
	@scripts/run.sh

test:
	@scripts/test.sh

check:
	@scripts/check.sh
