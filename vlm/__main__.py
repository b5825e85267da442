from pretrain.runtime.distributed import exit_worker
from vlm.cli import main

exit_worker(main())
