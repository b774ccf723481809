"""The paper's learning-rate rule: from a given epoch on, if the validation loss has not improved for
`patience` epochs, multiply the lr by `factor` and go back to the best checkpoint; stop after
`max_decays` such decays (reference code: epoch 15, patience 5, factor 0.5, 5 decays)."""

from dataclasses import dataclass


@dataclass
class PlateauRule:
    start_epoch: int = 15
    patience: int = 5
    factor: float = 0.5
    max_decays: int = 5
    best_loss: float = float("inf")
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    decays: int = 0

    def update(self, epoch, loss):
        """Record epoch's validation loss. Returns "improved", "wait", "decay" (halve lr, reload best)
        or "stop" (the last allowed decay is used up)."""
        if loss < self.best_loss:
            self.best_loss, self.best_epoch, self.epochs_without_improvement = loss, epoch, 0
            return "improved"
        self.epochs_without_improvement += 1
        if epoch >= self.start_epoch and self.epochs_without_improvement >= self.patience:
            self.decays += 1
            self.epochs_without_improvement = 0
            return "stop" if self.decays > self.max_decays else "decay"
        return "wait"

    def state_dict(self):
        return dict(self.__dict__)

    def load_state_dict(self, state):
        self.__dict__.update(state)
