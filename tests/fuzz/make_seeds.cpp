// Writes the small, valid seed inputs of the fuzz targets:
//   make_seeds OUT_DIR  ->  OUT_DIR/npy/*, OUT_DIR/csv/*, OUT_DIR/model/*
// (scripts/fuzz.sh runs it; nothing it writes is committed).
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "flows/checkpoint.hpp"
#include "flows/datasets.hpp"
#include "flows/flow.hpp"
#include "nn/io.hpp"

namespace fs = std::filesystem;

namespace {

void put(const fs::path& path, const std::string& bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) {
    std::perror(path.c_str());
    std::exit(1);
  }
  std::fclose(f);
}

std::string read(const fs::path& path) { return nn::read_file(path.string()); }

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds OUT_DIR\n");
    return 2;
  }
  const fs::path out = argv[1];
  for (const char* t : {"npy", "csv", "model"}) fs::create_directories(out / t);

  // .npy: float64 and float32 matrices, a 1-D uint8 array, int32, int64, a 0-d scalar, an empty array.
  const std::vector<double> d6 = {1.5, -2, 0.25, 3e10, -1e-300, 7};
  const std::vector<float> f6 = {1.5f, -2, 0.25f, 3e10f, -1e-30f, 7};
  const std::vector<std::uint8_t> u5 = {0, 1, 127, 128, 255};
  put(out / "npy" / "f8_3x2.npy", nn::encode_npy(d6.data(), {3, 2}, nn::Dtype::float64));
  put(out / "npy" / "f4_2x3.npy", nn::encode_npy(f6.data(), {2, 3}, nn::Dtype::float32));
  put(out / "npy" / "u1_5.npy", nn::encode_npy(u5.data(), {5}));
  put(out / "npy" / "f8_scalar.npy", nn::encode_npy(d6.data(), {}, nn::Dtype::float64));
  put(out / "npy" / "f8_0x2.npy", nn::encode_npy(d6.data(), {0, 2}, nn::Dtype::float64));
  {
    // '<i4' and '<i8' (read, never written): patch the descr of same-sized float arrays.
    std::string i4 = nn::encode_npy(f6.data(), {6}, nn::Dtype::float32);
    std::string i8 = nn::encode_npy(d6.data(), {2, 3}, nn::Dtype::float64);
    i4.replace(i4.find("<f4"), 3, "<i4");
    i8.replace(i8.find("<f8"), 3, "<i8");
    put(out / "npy" / "i4_6.npy", i4);
    put(out / "npy" / "i8_2x3.npy", i8);
  }
  // .npz archives: ours, and numpy's (np.savez; np.savez_compressed is rejected).
  {
    const std::string path = (out / "npy" / "two.npz").string();
    nn::write_npz(path, {{"a", nn::encode_npy(d6.data(), {3, 2})}, {"b", nn::encode_npy(u5.data(), {5})}});
  }
#ifdef TRFLOW_TEST_DATA
  for (const char* f : {"numpy_savez.npz", "numpy_savez_compressed.npz"})
    if (fs::exists(fs::path(TRFLOW_TEST_DATA) / f)) put(out / "npy" / f, read(fs::path(TRFLOW_TEST_DATA) / f));
#endif

  // .csv: with a header, without, CRLF and a BOM, NaN/Inf (rejected or dropped), blank lines at the end.
  put(out / "csv" / "header.csv", "x,y,z\n1,2,3\n-4.5,5e-3,+6\n7,8,9\n");
  put(out / "csv" / "plain.csv", "0.5, 1.5\n2.5 ,3.5\n\n\n");
  put(out / "csv" / "bom_crlf.csv", "\xEF\xBB\xBF" "a,b\r\n1,2\r\n3,4\r\n");
  put(out / "csv" / "nonfinite.csv", "1,nan\n2,3\ninf,-inf\n1e400,4\n");
  put(out / "csv" / "one.csv", "42");

  // Models: small flows of every layer type and both base densities, and
  // their architecture records as text (fuzz_model reads text starting with '{' as a record).
  struct Variant {
    const char* name;
    std::size_t dim;
    flows::FlowSpec spec;
  };
  std::vector<Variant> variants;
  {
    flows::FlowSpec s;
    s.layers = 2;
    s.coupling.hidden = 4;
    s.actnorm = true;
    s.lu = true;
    s.seed = 1;
    variants.push_back({"actnorm_lu_2d", 2, s});
    s.actnorm = s.lu = false;
    s.coupling.kind = flows::CouplingKind::additive;
    s.coupling.depth = 1;
    s.coupling.activation = ad::Activation::relu;
    s.base = "diagonal_gaussian";
    s.permutation = flows::Permutation::alternate;
    variants.push_back({"additive_diag_3d", 3, s});
    s.coupling.kind = flows::CouplingKind::affine;
    s.coupling.scale_clamp = 2.0;
    s.layers = 1;
    s.base = "standard_normal";
    variants.push_back({"affine_1d", 1, s});
    s.coupling.kind = flows::CouplingKind::rqs;
    s.coupling.conditioner = flows::ConditionerKind::resnet;
    s.coupling.scale_clamp = 0.0;
    s.coupling.bins = 4;
    s.structure = flows::Structure::steps;
    variants.push_back({"rqs_steps_resnet_2d", 2, s});
  }
  for (const Variant& v : variants) {
    auto flow = flows::make_flow<float>(v.dim, v.spec);
    const nlohmann::json meta = {{"data", "gaussian:" + std::to_string(v.dim)}, {"steps", 0}};
    flows::save_model((out / "model" / (std::string(v.name) + ".npz")).string(), *flow, meta);
    const nlohmann::json arch = {{"format", "trflow-model"}, {"version", 1}, {"flow", flow->config()}, {"meta", meta}};
    put(out / "model" / (std::string(v.name) + ".json"), arch.dump());
  }
  // A training checkpoint (model + optimizer moments + trainer state) after two steps (1-D: the
  // random-generator state alone is 6 kB of text).
  {
    auto flow = flows::make_flow<float>(1, variants[2].spec);
    flows::GaussianDataset data(1);
    flows::TrainConfig cfg;
    cfg.batch = 8;
    flows::Trainer<float> trainer(*flow, data, cfg);
    trainer.step();
    trainer.step();
    flows::save_checkpoint((out / "model" / "checkpoint_1d.npz").string(), *flow, trainer, {{"data", "gaussian:1"}});
    const nlohmann::json record = {{"format", "trflow-model"},
                                   {"version", 1},
                                   {"flow", flow->config()},
                                   {"meta", nlohmann::json::object()},
                                   {"trainer",
                                    {{"steps_done", trainer.steps_done()},
                                     {"optimizer_steps", trainer.optimizer().steps()},
                                     {"skipped", trainer.skipped()},
                                     {"rng", trainer.rng().state()}}}};
    put(out / "model" / "checkpoint_1d.json", record.dump());
  }
  return 0;
}
