// tape_demo: records f(x, y) = tanh(x·y + exp(x)), prints the tape as a table
// (index, op, inputs, value, adjoint after backward) and writes the graph as
// Graphviz DOT.
//
//   build/apps/tape_demo [x y] [--dot tape.dot]
//   dot -Tpng tape.dot -o tape.png
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "autodiff/autodiff.hpp"

int main(int argc, char** argv) {
  double x0 = 0.5, y0 = -1.5;
  std::string dot_path = "tape.dot";
  int positional = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--dot") == 0 && i + 1 < argc) dot_path = argv[++i];
    else if (positional == 0) x0 = std::atof(argv[i]), ++positional;
    else if (positional == 1) y0 = std::atof(argv[i]), ++positional;
  }

  // Forward pass: every operation appends one node to the tape.
  ad::Tape<double> tape;
  const ad::Var<double> x = tape.variable(ad::Array<double>({{x0}}));
  const ad::Var<double> y = tape.variable(ad::Array<double>({{y0}}));
  const ad::Var<double> f = ad::tanh(x * y + ad::exp(x));

  // Reverse pass: seed f̄ = 1 and walk the tape backwards once.
  tape.backward(f);

  std::printf("f(x, y) = tanh(x·y + exp(x)) at x = %g, y = %g\n\n", x0, y0);
  std::printf("%5s  %-8s  %-10s  %14s  %14s\n", "index", "op", "inputs", "value", "adjoint");
  for (std::size_t i = 0; i < tape.size(); ++i) {
    const ad::Node<double>& n = tape.node(i);
    std::string inputs;
    for (int k = 0; k < 3; ++k)
      if (n.in[k] >= 0) inputs += (inputs.empty() ? "" : ", ") + std::to_string(n.in[k]);
    const char* name = i == std::size_t(x.index) ? "x" : i == std::size_t(y.index) ? "y" : ad::op_name(n.op);
    std::printf("%5zu  %-8s  %-10s  %14.8f  %14.8f\n", i, name, inputs.empty() ? "-" : inputs.c_str(),
                tape.value(std::int32_t(i))(0, 0), tape.grad(std::int32_t(i))(0, 0));
  }

  // The same derivatives by hand: with u = x·y + exp(x), f = tanh u,
  // ∂f/∂x = (1 − f²)(y + exp(x)),  ∂f/∂y = (1 − f²) x.
  const double fv = std::tanh(x0 * y0 + std::exp(x0));
  std::printf("\nby hand: df/dx = %.8f, df/dy = %.8f\n", (1 - fv * fv) * (y0 + std::exp(x0)), (1 - fv * fv) * x0);
  std::printf("tape:    df/dx = %.8f, df/dy = %.8f\n", x.grad()(0, 0), y.grad()(0, 0));

  std::ofstream dot(dot_path);
  dot << "digraph tape {\n  rankdir=LR;\n  node [shape=record, fontname=\"Helvetica\"];\n";
  for (std::size_t i = 0; i < tape.size(); ++i) {
    const ad::Node<double>& n = tape.node(i);
    const char* name = i == std::size_t(x.index) ? "x" : i == std::size_t(y.index) ? "y" : ad::op_name(n.op);
    char label[256];
    std::snprintf(label, sizeof label, "{%zu: %s|value %.4f|adjoint %.4f}", i, name, tape.value(std::int32_t(i))(0, 0),
                  tape.grad(std::int32_t(i))(0, 0));
    dot << "  n" << i << " [label=\"" << label << "\"];\n";
    for (int k = 0; k < 3; ++k)
      if (n.in[k] >= 0) dot << "  n" << n.in[k] << " -> n" << i << ";\n";
  }
  dot << "}\n";
  std::printf("\ngraph written to %s (render: dot -Tpng %s -o tape.png)\n", dot_path.c_str(), dot_path.c_str());
  return dot ? 0 : 1;
}
