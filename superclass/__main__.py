from pretrain.runtime.distributed import exit_worker
from superclass.cli import main

exit_worker(main())
