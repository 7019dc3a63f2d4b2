import numpy as np

from iclrepro.evaluation import stages


def test_prediction_rows_label_each_entry_of_a_seed_first_array():
    predictions = np.arange(2 * 3 * 4).reshape(2, 3, 4)     # (seed, prompt, n)
    rows = stages.prediction_rows(predictions.shape, [5, 7], ("prompt", "n"))
    assert list(rows) == ["prompt", "seed", "n"]
    flat = predictions.reshape(-1)
    position = {5: 0, 7: 1}
    for index in (0, 5, 13, 23):
        seed, prompt, n = rows["seed"][index], rows["prompt"][index], rows["n"][index]
        assert flat[index] == predictions[position[seed], prompt, n]
