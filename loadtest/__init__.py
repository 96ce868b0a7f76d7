"""Load tests of the request budget: locustfiles, an open-loop driver, the runner and its report."""
