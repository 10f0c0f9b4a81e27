"""``python -m rlal``: the ``rlal`` command."""

import sys

from rlal import drop_working_dir_from_sys_path

drop_working_dir_from_sys_path()  # before anything else is imported: nothing may come from the cwd

from rlal.cli import main  # noqa: E402

sys.exit(main())
