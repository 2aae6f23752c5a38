// mlp_regression: a 2-layer MLP learns y = sin(2x) on [−2, 2] with Adam.
#include <cmath>
#include <cstdio>

#include "nn/module.hpp"
#include "nn/optim.hpp"

int main() {
  ad::Rng rng(0);
  nn::MLP<float> mlp(1, {32, 32}, 1, ad::Activation::tanh, rng);  // 1 → 32 → 32 → 1
  nn::Adam<float> adam(mlp.parameters(), 1e-2);

  ad::Array<float> x({128, 1}), y({128, 1});
  for (std::size_t i = 0; i < 128; ++i) {
    x(i, 0) = -2.0f + 4.0f * float(i) / 127.0f;
    y(i, 0) = std::sin(2.0f * x(i, 0));
  }

  ad::Tape<float> tape;
  for (int step = 0; step <= 2000; ++step) {
    tape.clear();  // reuse the tape's memory: no allocation after the first step
    auto loss = ad::mean(ad::square(mlp(tape.constant(x)) - tape.constant(y)));
    mlp.zero_grad();
    tape.backward(loss);
    adam.step();
    if (step % 250 == 0) std::printf("step %4d  mse %.6f\n", step, loss.item());
  }
}
