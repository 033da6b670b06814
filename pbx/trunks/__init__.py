"""SIP trunks (the module became a package; split along its seams in the next commit)."""

from pbx.trunks.manager import *  # noqa: F403
from pbx.trunks.manager import __all__  # noqa: F401
