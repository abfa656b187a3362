"""Print what any clustering can and cannot tell apart: the ARI ceiling of two populations d SD
apart, and the BIC of two Gaussians against one skewed population (the figures behind the
heterogeneity targets; the computation is ``cytomsc.simulate.identifiability``, checked in
tests/test_identifiability.py).

Run: python benchmarks/identifiability.py  (about two minutes)
"""

from cytomsc.simulate.identifiability import main

if __name__ == "__main__":
    main()
