"""Programs: the model (segments, limits, parsing), validation and the built-in programs.

``treadctl.programs.model`` parses TOML/JSON programs, ``treadctl.programs.validate`` checks
them against :class:`treadctl.limits.EffectiveLimits` before anything moves, and
``treadctl/programs/builtin/*.toml`` holds the built-in reverse-training programs.
"""

from treadctl.programs.model import (
    Program,
    ProgramError,
    Segment,
    Violation,
    builtin_names,
    list_builtin,
    load_builtin,
    load_program,
    load_program_file,
    program_from_dict,
    program_from_json,
)
from treadctl.programs.validate import (
    ProgramCheck,
    check_program,
    ramp_warnings,
    require_valid,
    validate_program,
)

__all__ = [
    "Program",
    "ProgramCheck",
    "ProgramError",
    "Segment",
    "Violation",
    "builtin_names",
    "check_program",
    "list_builtin",
    "load_builtin",
    "load_program",
    "load_program_file",
    "program_from_dict",
    "program_from_json",
    "ramp_warnings",
    "require_valid",
    "validate_program",
]
