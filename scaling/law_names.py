"""The law names of ``scalinglab fit --law`` and how many parameters each fits.

Plain data with no imports, so the command line can list the choices without loading the fitting
code (:mod:`scalinglab.scaling.laws` fits them).
"""

__all__ = ["LAWS", "LOSS_LAWS", "N_PARAMS"]

LAWS = (
    "chinchilla",
    "kaplan-n",
    "kaplan-d",
    "kaplan-c",
    "kaplan-nd",
    "isoflop",
    "envelope",
    "kaplan-ns",
    "kaplan-cmin",
)
LOSS_LAWS = ("chinchilla", "kaplan-n", "kaplan-d", "kaplan-c", "kaplan-nd")
N_PARAMS = {
    "chinchilla": 5,
    "kaplan-n": 2,
    "kaplan-d": 2,
    "kaplan-c": 2,
    "kaplan-nd": 4,
    "isoflop": 6,
    "envelope": 2,
    "kaplan-ns": 1,
    "kaplan-cmin": 2,
}
