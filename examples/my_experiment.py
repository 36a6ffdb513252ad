"""An experiment kept in a script and run from the command line.

    python examples/my_experiment.py                          # one trial, default parameters
    python examples/my_experiment.py n=500 noise=0.5 --seed 1
    daskperiment run examples/my_experiment.py n=500 noise=0.5 --seed 1

Values are read as Python literals (``1``, ``0.5``, ``[1, 2]``), anything else as text.
Nothing computes just because the script builds a result: the last line's explicit
``ex.run_from_command_line()`` is what makes ``python my_experiment.py ...`` run a trial
(``daskperiment run`` runs the trial itself and that line then does nothing).
"""

import numpy as np

import daskperiment

ex = daskperiment.Experiment(id="my_experiment")
n = ex.parameter("n", default=200)
noise = ex.parameter("noise", default=0.1)
epochs = ex.parameter("epochs", default=50)


@ex.persist
def make_data(n, noise):
    x = np.linspace(0.0, 1.0, n)
    y = 3.0 * x + 1.0 + np.random.normal(scale=noise, size=n)
    return np.stack([x, y])


@ex.result
def fit_slope(data, epochs):
    """Fit y = w * x + c by gradient descent, saving the loss of every epoch."""
    x, y = data
    w = c = 0.0
    for epoch in range(epochs):
        error = w * x + c - y
        ex.save_metric("loss", epoch=epoch, value=float(np.mean(error**2)))
        w -= 0.5 * float(np.mean(error * x))
        c -= 0.5 * float(np.mean(error))
    return w


slope = fit_slope(make_data(n, noise), epochs)

ex.run_from_command_line()

if __name__ == "__main__":
    print(ex.get_history(verbose=False).tail(3).to_string())
    print(ex.load_metric("loss", trial_id=ex.trial_id).tail(3).to_string())
