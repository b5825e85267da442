from captioning.cli import main
from pretrain.runtime.distributed import exit_worker

exit_worker(main())
