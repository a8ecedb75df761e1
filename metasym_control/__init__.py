"""metasym-control: MetaSym, a symplectic meta-learned dynamics model, inside MPC."""

from metasym_control.registration import ENV_IDS, register_envs

__version__ = "0.1.0"
__all__ = ["ENV_IDS", "__version__", "register_envs"]

register_envs()
