// The trflow command line: outputs, exit codes, error messages, resume after SIGKILL and SIGINT.
#ifdef TRFLOW_HAVE_APP
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "app.hpp"
#include "autodiff/random.hpp"
#include "nn/io.hpp"

namespace fs = std::filesystem;

namespace {

struct Result {
  int code = -1;
  std::string out, err;
};

fs::path temp_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("trflow_app_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

/// Runs the trflow binary with the arguments after `launcher` (empty, or mpirun_prefix),
/// capturing stdout and stderr.
Result run_launched(const std::string& launcher, const std::string& args, const fs::path& dir) {
  const std::string out = (dir / "stdout.txt").string(), err = (dir / "stderr.txt").string();
  const std::string cmd = launcher + TRFLOW_BINARY + " " + args + " >" + out + " 2>" + err + " </dev/null";
  const int status = std::system(cmd.c_str());
  Result r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = nn::read_file(out);
  r.err = nn::read_file(err);
  return r;
}

Result run(const std::string& args, const fs::path& dir) { return run_launched("", args, dir); }

/// The last line of stdout as JSON.
nlohmann::json last_json(const std::string& out) {
  std::string line, last;
  std::istringstream in(out);
  while (std::getline(in, line))
    if (!line.empty()) last = line;
  return nlohmann::json::parse(last);
}

/// Runs a command that must succeed (its stderr is the failure message) and returns its final JSON line.
nlohmann::json run_ok(const std::string& args, const fs::path& dir) {
  const Result r = run(args, dir);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  return last_json(r.out);
}

/// Starts `launcher trflow args` in the background (stdout dropped, stderr to err), waits until
/// it has written out/metrics.jsonl (at most timeout_s) and settle_ms more, sends it sig, and
/// returns its wait status.
int signal_mid_run(const std::string& launcher, const std::string& args, const fs::path& out, const fs::path& err,
                   int sig, int settle_ms, int timeout_s) {
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const std::string cmd =
        "exec " + launcher + TRFLOW_BINARY + " " + args + " >/dev/null 2>" + err.string();
    execl("/bin/sh", "sh", "-c", cmd.c_str(), (char*)nullptr);
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (std::chrono::steady_clock::now() < deadline && !fs::exists(out / "metrics.jsonl"))
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::this_thread::sleep_for(std::chrono::milliseconds(settle_ms));
  kill(pid, sig);
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

std::string quick(const fs::path& out) {
  return "train --steps 60 --batch 64 --layers 2 --hidden 16 --eval-n 500 --no-plots --threads 1 --out " + out.string();
}

/// A run directory's config.json.
nlohmann::json config_of(const fs::path& run_dir) { return nlohmann::json::parse(nn::read_file((run_dir / "config.json").string())); }

#ifdef TRFLOW_MPIEXEC
/// "mpirun -np n " with what it needs here: oversubscribed, allowed as root, and (ASan builds)
/// no leak report: Open MPI keeps allocations until exit, and those are not this project's.
std::string mpirun_prefix(int n) {
  return "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 "
         "ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 " +
         std::string(TRFLOW_MPIEXEC) + " -np " + std::to_string(n) + " ";
}

/// Runs the trflow binary under mpirun with n ranks.
Result run_mpi(int n, const std::string& args, const fs::path& dir) { return run_launched(mpirun_prefix(n), args, dir); }
#endif

/// `eval` on a model reports each key, and `sample --trajectories` writes states of `shape` (for 10 samples).
void check_eval_and_trajectories(const fs::path& model, const std::vector<const char*>& keys,
                                 const std::vector<std::size_t>& shape, const fs::path& dir) {
  const Result e = run("eval --model " + model.string() + " --n 2000", dir);
  REQUIRE_MESSAGE(e.code == 0, e.err);
  for (const char* k : keys) CHECK_MESSAGE(last_json(e.out).contains(k), k);
  const Result s = run("sample --model " + model.string() + " --n 10 --out " + (dir / "s.npy").string() +
                           " --trajectories " + (dir / "t.npy").string(), dir);
  REQUIRE_MESSAGE(s.code == 0, s.err);
  CHECK(nn::read_npy((dir / "t.npy").string()).shape == shape);
}

/// The parameters of a model.npz by name.
std::map<std::string, std::vector<double>> params_of(const fs::path& npz) {
  std::map<std::string, std::vector<double>> m;
  for (auto& a : nn::read_npz(npz.string()))
    if (a.name != "architecture") m[a.name] = a.data;
  return m;
}

}  // namespace

TEST_CASE("trflow train writes the model, config, metrics and a final JSON line, and eval, sample and plot use it") {
  const fs::path dir = temp_dir("pipeline");
  const fs::path model = dir / "model";
  const Result t = run("train --data gaussian:2 --steps 80 --batch 64 --layers 2 --hidden 16 --eval-n 500 "
                       "--threads 1 --log-every 20 --out " + model.string(), dir);
  REQUIRE_MESSAGE(t.code == 0, t.err);
  for (const char* f : {"model.npz", "config.json", "metrics.jsonl", "checkpoint.npz", "samples.png", "density.png",
                        "trajectories.png", "losses.png"})
    CHECK_MESSAGE(fs::exists(model / f), f);
  const nlohmann::json final = last_json(t.out);
  for (const char* k : {"nll", "transport", "map_cost", "true_nll", "w2_sq", "map_ratio", "transport_ratio"})
    CHECK_MESSAGE(final.contains(k), k);
  CHECK(final.at("steps").get<int>() == 80);
  std::ifstream metrics(model / "metrics.jsonl");
  int lines = 0;
  nlohmann::json last_line;
  for (std::string line; std::getline(metrics, line); ++lines) {
    last_line = nlohmann::json::parse(line);
    CHECK(last_line.contains(last_line.at("step") == 0 ? "val_nll" : "nll"));
  }
  CHECK(lines == 6);  // the starting model's validation (step 0), then steps 1, 20, 40, 60, 80
  // The last step is validated; gaussian:2 has a known OT map, so the map's L2-UVP and cosine are logged.
  for (const char* k : {"val_nll", "val_best", "l2_uvp", "ot_cos"}) CHECK_MESSAGE(last_line.contains(k), k);
  CHECK(final.contains("l2_uvp"));

  const Result e = run("eval --model " + model.string() + " --n 2000", dir);
  REQUIRE_MESSAGE(e.code == 0, e.err);
  const nlohmann::json ev = last_json(e.out);
  for (const char* k : {"nll", "transport", "map_cost", "true_nll", "w2_sq", "map_ratio", "transport_ratio"})
    CHECK_MESSAGE(ev.contains(k), k);
  CHECK(ev.at("map_ratio").get<double>() == doctest::Approx(ev.at("map_cost").get<double>() / ev.at("w2_sq").get<double>()));

  const Result s = run("sample --model " + model.string() + " --n 33 --out " + (dir / "s.npy").string() +
                           " --trajectories " + (dir / "t.npy").string(), dir);
  REQUIRE_MESSAGE(s.code == 0, s.err);
  CHECK(nn::read_npy((dir / "s.npy").string()).shape == std::vector<std::size_t>{33, 2});
  CHECK(nn::read_npy((dir / "t.npy").string()).shape == std::vector<std::size_t>{3, 33, 2});  // L + 1 = 3 states

  const Result p = run("plot --model " + model.string() + " --out " + (dir / "figs").string(), dir);
  REQUIRE_MESSAGE(p.code == 0, p.err);
  CHECK(fs::exists(dir / "figs" / "trajectories.png"));
  CHECK(fs::exists(dir / "figs" / "ot_map.png"));  // gaussian:2 has a known OT map
  fs::remove_all(dir);
}

TEST_CASE("invalid flags exit with code 2 and a message naming the flag") {
  const fs::path dir = temp_dir("flags");
  struct Case {
    const char* args;
    const char* mention;
  };
  for (const Case& c : {Case{"train --steps 0", "--steps"}, Case{"train --steps -5", "--steps"},
                        Case{"train --batch 0", "--batch"}, Case{"train --layers 0", "--layers"},
                        Case{"train --hidden -1", "--hidden"}, Case{"train --lr 0", "--lr"},
                        Case{"train --lr -1e-3", "--lr"}, Case{"train --activation swish", "--activation"},
                        Case{"train --transport-dir sideways", "--transport-dir"},
                        Case{"train --transport-floor 0.1", "--transport-floor"},
                        Case{"train --transport-schedule cosine --transport-weight 0", "--transport-schedule"},
                        Case{"train --steps ten", "--steps"}, Case{"train --no-such-flag", "no-such-flag"},
                        Case{"eval", "--model"}, Case{"frobnicate", "frobnicate"},
                        Case{"train --coupling spline", "--coupling"}, Case{"train --coupling rqs --bins 1", "--bins"},
                        Case{"train --coupling rqs --bins 65", "--bins"}, Case{"train --coupling affine --bins 8", "--bins"},
                        Case{"train --coupling rqs --tail-bound 0", "--tail-bound"},
                        Case{"train --coupling affine --tail-bound 4", "--tail-bound"},
                        Case{"train --coupling rqs --scale-clamp 2", "--scale-clamp"},
                        Case{"train --additive --coupling rqs", "--additive"},
                        Case{"train --structure blocks", "--structure"}, Case{"train --conditioner cnn", "--conditioner"},
                        // non-finite numbers and integers beyond their type (issue 16, classes 1 and 2)
                        Case{"train --lr inf", "--lr"}, Case{"train --transport-weight nan", "--transport-weight"},
                        Case{"train --tail-bound inf", "--tail-bound"}, Case{"train --lr 1e999", "--lr"},
                        Case{"train --val-fraction nan", "--val-fraction"}, Case{"train --clip-norm inf", "--clip-norm"},
                        Case{"train --steps 99999999999999999999", "--steps"},
                        Case{"train --layers 99999999999999999999", "--layers"},
                        Case{"train --threads 3000000000", "--threads"}, Case{"train --batch 1e3", "--batch"},
                        Case{"train --seed -1", "--seed"}, Case{"train --warmup -1", "--warmup"},
                        Case{"sample --model m --out s.npy --n 99999999999999999999", "--n"},
                        Case{"eval --model m --seed 18446744073709551616", "--seed"}}) {
    const std::string args = c.args;
    CAPTURE(args);
    const Result r = run(std::string(c.args) + " --out " + (dir / "x").string(), dir);
    CHECK(r.code == 2);
    CHECK_MESSAGE(r.err.find(c.mention) != std::string::npos, r.err);
  }
  fs::remove_all(dir);
}

TEST_CASE("data errors exit with code 1 and name the file, the line or offset, and what was expected") {
  const fs::path dir = temp_dir("data");
  {
    std::ofstream(dir / "bad.csv") << "x,y\n1,2\n3,abc\n";
    const Result r = run(quick(dir / "m") + " --data " + (dir / "bad.csv").string(), dir);
    CHECK(r.code == 1);
    CHECK_MESSAGE(r.err.find("bad.csv") != std::string::npos, r.err);
    CHECK_MESSAGE(r.err.find("3") != std::string::npos, r.err);
    CHECK_MESSAGE(r.err.find("abc") != std::string::npos, r.err);
  }
  {
    std::ofstream(dir / "nan.csv") << "1,2\n3,nan\n5,6\n7,8\n";
    const Result r = run(quick(dir / "m") + " --data " + (dir / "nan.csv").string(), dir);
    CHECK(r.code == 1);
    CHECK_MESSAGE(r.err.find("nan.csv") != std::string::npos, r.err);
    const Result dropped = run(quick(dir / "m") + " --drop-nonfinite --data " + (dir / "nan.csv").string(), dir);
    CHECK_MESSAGE(dropped.code == 0, dropped.err);
  }
  {
    std::ofstream(dir / "trunc.npy", std::ios::binary) << "\x93NUMPY\x01\x00";
    const Result r = run(quick(dir / "m") + " --data " + (dir / "trunc.npy").string(), dir);
    CHECK(r.code == 1);
    CHECK_MESSAGE(r.err.find("trunc.npy") != std::string::npos, r.err);
    CHECK_MESSAGE(r.err.find("offset") != std::string::npos, r.err);
  }
  {
    const Result r = run(quick(dir / "m") + " --data 9gaussians", dir);
    CHECK(r.code == 2);
    CHECK_MESSAGE(r.err.find("8gaussians") != std::string::npos, r.err);  // lists the known sets
    CHECK_MESSAGE(r.err.find("swissroll") != std::string::npos, r.err);
  }
  {
    const Result t = run(quick(dir / "m2") + " --data gaussian:2", dir);
    REQUIRE_MESSAGE(t.code == 0, t.err);
    const Result r = run("eval --model " + (dir / "m2").string() + " --data gaussian:3", dir);
    CHECK(r.code == 1);
    CHECK_MESSAGE(r.err.find("3") != std::string::npos, r.err);
    CHECK_MESSAGE(r.err.find("2") != std::string::npos, r.err);
    const Result missing = run("eval --model " + (dir / "nowhere").string(), dir);
    CHECK(missing.code == 1);
    CHECK_MESSAGE(missing.err.find("nowhere") != std::string::npos, missing.err);
  }
  fs::remove_all(dir);
}

TEST_CASE("divergence stops with the step and the term named, a hint, exit 1, and the checkpoint intact") {
  const fs::path dir = temp_dir("diverge");
  // Affine couplings: exp(w) overflows at this rate (a spline's slopes are bounded, so it does not).
  const Result r = run("train --coupling affine --steps 400 --batch 64 --layers 2 --hidden 16 --no-plots --threads 1 --lr 1e6 "
                       "--checkpoint-every 1 --warmup 0 --out " + (dir / "m").string(), dir);
  CHECK(r.code == 1);
  CHECK_MESSAGE(r.err.find("diverged at step") != std::string::npos, r.err);
  CHECK_MESSAGE(r.err.find("learning rate") != std::string::npos, r.err);
  REQUIRE(fs::exists(dir / "m" / "checkpoint.npz"));
  for (const auto& a : nn::read_npz((dir / "m" / "checkpoint.npz").string()))
    for (double v : a.data) CHECK(std::isfinite(v));
  // With --skip-nonfinite the run goes on and counts the skipped batches.
  const Result skip = run("train --coupling affine --steps 40 --batch 64 --layers 2 --hidden 16 --no-plots --threads 1 --lr 1e6 "
                          "--warmup 0 --eval-n 200 --skip-nonfinite --out " + (dir / "s").string(), dir);
  CHECK_MESSAGE(skip.code != 2, skip.err);
  if (skip.code == 0) CHECK(last_json(skip.out).at("skipped_batches").get<int>() > 0);
  fs::remove_all(dir);
}

TEST_CASE("--threads 2: training is reproducible run to run, and eval and sample agree with --threads 1") {
  const fs::path dir = temp_dir("threads");
  const std::string common = "train --data moons --steps 60 --batch 256 --layers 2 --hidden 16 --eval-n 500 "
                             "--no-plots --quiet --threads 2 --out ";
  const Result a = run(common + (dir / "a").string(), dir);
  REQUIRE_MESSAGE(a.code == 0, a.err);
  const Result b = run(common + (dir / "b").string(), dir);
  REQUIRE_MESSAGE(b.code == 0, b.err);
  CHECK(params_of(dir / "a" / "model.npz") == params_of(dir / "b" / "model.npz"));

  const std::string model = (dir / "a").string();
  const Result e1 = run("eval --model " + model + " --n 3000 --threads 1", dir);
  const Result e2 = run("eval --model " + model + " --n 3000 --threads 2", dir);
  REQUIRE_MESSAGE(e1.code == 0, e1.err);
  REQUIRE_MESSAGE(e2.code == 0, e2.err);
  for (const char* k : {"nll", "transport", "map_cost"})
    CHECK(last_json(e2.out).at(k).get<double>() == doctest::Approx(last_json(e1.out).at(k).get<double>()).epsilon(1e-6));

  const Result s1 = run("sample --model " + model + " --n 700 --threads 1 --out " + (dir / "s1.npy").string(), dir);
  const Result s2 = run("sample --model " + model + " --n 700 --threads 2 --out " + (dir / "s2.npy").string(), dir);
  REQUIRE_MESSAGE(s1.code == 0, s1.err);
  REQUIRE_MESSAGE(s2.code == 0, s2.err);
  const std::vector<double> x1 = nn::read_npy((dir / "s1.npy").string()).data, x2 = nn::read_npy((dir / "s2.npy").string()).data;
  REQUIRE(x1.size() == 1400);
  REQUIRE(x2.size() == 1400);
  for (std::size_t i = 0; i < x1.size(); ++i) CHECK(x2[i] == doctest::Approx(x1[i]).epsilon(1e-5));
  fs::remove_all(dir);
}

TEST_CASE("spline flows through the CLI: rqs steps with a resnet conditioner train, evaluate, sample, plot and resume exactly") {
  const fs::path dir = temp_dir("rqs");
  const std::string common = "train --data moons --coupling rqs --bins 6 --structure steps --conditioner resnet --depth 1 "
                             "--layers 2 --hidden 16 --batch 64 --eval-n 500 --threads 1 --quiet --checkpoint-every 20 "
                             "--lr-schedule constant --warmup 0 --out ";  // so that 30 + 30 steps = 60 steps
  const Result straight = run(common + (dir / "a").string() + " --steps 60 --no-plots", dir);
  REQUIRE_MESSAGE(straight.code == 0, straight.err);
  const nlohmann::json config = nlohmann::json::parse(std::ifstream(dir / "a" / "config.json"));
  CHECK(config.at("coupling") == "rqs");
  CHECK(config.at("structure") == "steps");
  CHECK(config.at("tail_bound").get<double>() >= 3.0);  // chosen from the data, recorded for --resume
  // Each step: LU + two couplings, so 2 steps leave 7 states per trajectory.
  const Result s = run("sample --model " + (dir / "a").string() + " --n 20 --out " + (dir / "s.npy").string() +
                           " --trajectories " + (dir / "t.npy").string(), dir);
  REQUIRE_MESSAGE(s.code == 0, s.err);
  CHECK(nn::read_npy((dir / "t.npy").string()).shape == std::vector<std::size_t>{7, 20, 2});
  const Result e = run("eval --model " + (dir / "a").string() + " --n 1000", dir);
  REQUIRE_MESSAGE(e.code == 0, e.err);
  CHECK(std::isfinite(last_json(e.out).at("nll").get<double>()));
  const Result p = run("plot --model " + (dir / "a").string() + " --out " + (dir / "figs").string(), dir);
  REQUIRE_MESSAGE(p.code == 0, p.err);
  CHECK(fs::exists(dir / "figs" / "density.png"));
  // The same run in two halves (a schedule that does not depend on --steps) ends with the same parameters.
  REQUIRE(run(common + (dir / "b").string() + " --steps 30 --no-plots", dir).code == 0);
  const Result resumed = run(common + (dir / "b").string() + " --steps 60 --no-plots --resume", dir);
  REQUIRE_MESSAGE(resumed.code == 0, resumed.err);
  CHECK(params_of(dir / "a" / "model.npz") == params_of(dir / "b" / "model.npz"));
  fs::remove_all(dir);
}

TEST_CASE("a model and checkpoint written by trflow 0.1 (affine only) still load, evaluate as then, and resume") {
  const fs::path dir = temp_dir("v01");
  const fs::path old = fs::path(TRFLOW_TEST_DATA) / "model_v0.1";
  fs::copy(old, dir / "m");
  // eval_n4000_seed5.json is what trflow 0.1 printed for `eval --n 4000 --seed 5` on this model.
  const nlohmann::json then = nlohmann::json::parse(std::ifstream(old / "eval_n4000_seed5.json"));
  const Result e = run("eval --model " + (dir / "m").string() + " --n 4000 --seed 5", dir);
  REQUIRE_MESSAGE(e.code == 0, e.err);
  const nlohmann::json now = last_json(e.out);
  // The same float32 model and samples: equal up to float32 rounding, which differs between
  // builds (a Release build contracts to FMAs that the sanitizer build at -O1 does not).
  for (const char* k : {"nll", "transport", "map_cost", "forward_kl"})
    CHECK_MESSAGE(now.at(k).get<double>() == doctest::Approx(then.at(k).get<double>()).epsilon(1e-5), k);
  const Result r = run("train --out " + (dir / "m").string() + " --steps 220 --no-plots --quiet --eval-n 500 --resume", dir);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(last_json(r.out).at("steps").get<int>() == 220);
  const nlohmann::json config = nlohmann::json::parse(std::ifstream(dir / "m" / "config.json"));
  CHECK(config.at("coupling") == "affine");
  fs::remove_all(dir);
}

TEST_CASE("data files: held-out validation rows, early stopping, the best model saved, and an exact resume") {
  const fs::path dir = temp_dir("val");
  // 120 rows of a 6-D data set: small enough for a 4-layer spline flow to overfit within a few hundred steps.
  std::vector<double> rows(120 * 6);
  ad::Rng rng(9);
  for (std::size_t i = 0; i < 120; ++i)
    for (std::size_t j = 0; j < 6; ++j) rows[i * 6 + j] = std::sin(double(i * 7 + j)) + 0.3 * rng.normal();
  const fs::path data = dir / "rows.npy";
  nn::write_file_atomic(data.string(), nn::encode_npy(rows.data(), {120, 6}));
  // (--dropout 0: a flow that overfits quickly.)
  const std::string common = "train --data " + data.string() + " --standardize --batch 64 --eval-every 20 --patience 5 "
                             "--init identity --dropout 0 "
                             "--lr-schedule constant --warmup 0 --no-plots --threads 1 --quiet --eval-n 300 "
                             "--checkpoint-every 40 --out ";
  const Result r = run(common + (dir / "a").string() + " --steps 3000", dir);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const nlohmann::json res = last_json(r.out);
  CHECK(res.at("stopped_early").get<bool>());
  CHECK(res.at("steps").get<int>() < 3000);
  CHECK(res.at("val_rows").get<int>() == 12);  // --val-fraction 0.1 of 120
  const int best = res.at("best_step").get<int>();
  CHECK(best % 20 == 0);
  CHECK(res.at("steps").get<int>() == best + 5 * 20);  // stopped after 5 evaluations without improvement
  // metrics.jsonl: the best step's val_nll is the lowest, and the saved model scores it on the same rows.
  std::ifstream metrics(dir / "a" / "metrics.jsonl");
  double lowest = 1e300;
  int lowest_step = -1;
  for (std::string line; std::getline(metrics, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("val_nll") && j.at("val_nll").get<double>() < lowest)
      lowest = j.at("val_nll").get<double>(), lowest_step = j.at("step").get<int>();
  }
  CHECK(lowest_step == best);
  // result.json is in data units, the log in the model's (standardized): they differ by Σ_j log σ_j,
  // with σ the standardization saved in the model's architecture record.
  double offset = 0;
  for (auto& a : nn::read_npz((dir / "a" / "model.npz").string()))
    if (a.name == "architecture") {
      const nlohmann::json arch = nlohmann::json::parse(std::string(a.data.begin(), a.data.end()));
      for (double sd : arch.at("meta").at("standardization").at("std")) offset += std::log(sd);
    }
  CHECK(offset != 0);
  CHECK(res.at("val_nll").get<double>() == doctest::Approx(lowest + offset).epsilon(1e-9));
  // The same run interrupted at step 40 (a checkpoint) and resumed ends with the same best model.
  REQUIRE(run(common + (dir / "b").string() + " --steps 40", dir).code == 0);
  const Result resumed = run(common + (dir / "b").string() + " --steps 3000 --resume", dir);
  REQUIRE_MESSAGE(resumed.code == 0, resumed.err);
  CHECK(last_json(resumed.out).at("best_step") == res.at("best_step"));
  CHECK(params_of(dir / "a" / "model.npz") == params_of(dir / "b" / "model.npz"));
  // --lr-schedule plateau halves the rate after every 5 evaluations in a row without improvement.
  const Result plateau = run("train --data " + data.string() + " --standardize --batch 64 --eval-every 20 --patience 12 "
                             "--init identity --dropout 0 "
                             "--lr-schedule plateau --warmup 0 --lr 1e-3 --no-plots --threads 1 --quiet --eval-n 300 "
                             "--steps 3000 --out " + (dir / "p").string(), dir);
  REQUIRE_MESSAGE(plateau.code == 0, plateau.err);
  const int pbest = last_json(plateau.out).at("best_step").get<int>();
  double lr_at_best = 0, lr_after_5 = 0, lr_after_10 = 0;
  // pbest is the best evaluation of the run, so none after it improved; the rate may have been
  // halved before it, so compare with the rate at pbest.
  std::ifstream plog(dir / "p" / "metrics.jsonl");
  for (std::string line; std::getline(plog, line);) {
    const auto j = nlohmann::json::parse(line);
    const int step = j.at("step").get<int>();
    if (step == pbest) lr_at_best = j.at("lr").get<double>();
    if (step == pbest + 5 * 20 + 20) lr_after_5 = j.at("lr").get<double>();   // after the 5th evaluation without improvement
    if (step == pbest + 10 * 20 + 20) lr_after_10 = j.at("lr").get<double>();
  }
  CHECK(lr_at_best > 0);
  CHECK(lr_after_5 == doctest::Approx(lr_at_best / 2).epsilon(1e-9));
  CHECK(lr_after_10 == doctest::Approx(lr_at_best / 4).epsilon(1e-9));
  // --patience needs validation rows.
  const Result bad = run("train --data " + data.string() + " --val-fraction 0 --patience 3 --out " + (dir / "c").string(), dir);
  CHECK(bad.code == 2);
  CHECK_MESSAGE(bad.err.find("--patience") != std::string::npos, bad.err);
  fs::remove_all(dir);
}

TEST_CASE("a run killed with SIGKILL and resumed ends with the same parameters as an uninterrupted run") {
  const fs::path dir = temp_dir("kill");
  const std::string common = "train --data moons --steps 300 --batch 64 --layers 2 --hidden 16 --eval-n 200 "
                             "--no-plots --threads 1 --checkpoint-every 25 --quiet --out ";
  const Result straight = run(common + (dir / "a").string(), dir);
  REQUIRE_MESSAGE(straight.code == 0, straight.err);

  const fs::path b = dir / "b";
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const std::string cmd = std::string(TRFLOW_BINARY) + " " + common + b.string() + " >/dev/null 2>&1";
    execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), (char*)nullptr);
    _exit(127);
  }
  // Wait for the second checkpoint, then kill without warning.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  bool killed = false;
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream metrics(b / "metrics.jsonl");
    int lines = 0;
    for (std::string line; std::getline(metrics, line);) ++lines;
    if (lines >= 3 && fs::exists(b / "checkpoint.npz")) {
      kill(pid, SIGKILL);
      killed = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  int status = 0;
  waitpid(pid, &status, 0);
  REQUIRE(killed);
  CHECK(WIFSIGNALED(status));
  CHECK(!fs::exists(b / "model.npz"));

  const Result resumed = run(common + b.string() + " --resume", dir);
  REQUIRE_MESSAGE(resumed.code == 0, resumed.err);
  CHECK(params_of(dir / "a" / "model.npz") == params_of(b / "model.npz"));
  // The metrics log has each step once.
  std::ifstream metrics(b / "metrics.jsonl");
  std::vector<int> steps;
  for (std::string line; std::getline(metrics, line);) steps.push_back(nlohmann::json::parse(line).at("step"));
  for (std::size_t i = 1; i < steps.size(); ++i) CHECK(steps[i] > steps[i - 1]);
  fs::remove_all(dir);
}

TEST_CASE("SIGINT and SIGTERM save a checkpoint and exit with 130 and 143, and --resume finishes the run") {
  for (const auto& sig_code : {std::pair<int, int>{SIGINT, 130}, {SIGTERM, 143}}) {
    const int sig = sig_code.first, code = sig_code.second;
    CAPTURE(sig);
    const fs::path dir = temp_dir("signal" + std::to_string(sig));
    const fs::path m = dir / "m";
    const std::string common = "train --steps 100000 --batch 64 --layers 2 --hidden 16 --eval-n 200 --no-plots "
                               "--threads 1 --quiet --out ";
    const int status = signal_mid_run("", common + m.string(), m, dir / "err.txt", sig, 300, 60);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == code);
    REQUIRE(fs::exists(m / "checkpoint.npz"));
    std::ifstream err(dir / "err.txt");
    std::stringstream ss;
    ss << err.rdbuf();
    CHECK_MESSAGE(ss.str().find("--resume") != std::string::npos, ss.str());
    const Result resumed = run(common + m.string() + " --resume --steps 400", dir);
    // The checkpoint may already be past step 400 on a fast machine; either way no crash.
    CHECK_MESSAGE((resumed.code == 0 || resumed.code == 2), resumed.err);
    fs::remove_all(dir);
  }
}

TEST_CASE("empty and clashing output paths are usage errors, and a model holding NaN is refused by name") {
  const fs::path dir = temp_dir("outputs");
  const Result empty = run("train --out \"\" --steps 5", dir);
  CHECK(empty.code == 2);
  CHECK_MESSAGE(empty.err.find("--out") != std::string::npos, empty.err);
  const fs::path model = fs::path(TRFLOW_TEST_DATA) / "model_v0.1";
  const Result same = run("sample --model " + model.string() + " --n 5 --out " + (dir / "s.npy").string() +
                              " --trajectories " + (dir / "." / "s.npy").string(), dir);
  CHECK(same.code == 2);
  CHECK_MESSAGE(same.err.find("same file") != std::string::npos, same.err);
  CHECK(!fs::exists(dir / "s.npy"));
  const Result empty_sample = run("sample --model " + model.string() + " --n 5 --out \"\"", dir);
  CHECK(empty_sample.code == 2);
  // A copy of the v0.1 model with one weight set to NaN: every command that loads it refuses it.
  std::vector<std::pair<std::string, std::string>> entries;
  for (auto& a : nn::read_npz((model / "model.npz").string())) {
    if (a.name == "architecture") {
      std::vector<std::uint8_t> bytes(a.data.begin(), a.data.end());
      entries.emplace_back(a.name, nn::encode_npy(bytes.data(), a.shape));
    } else {
      std::vector<float> v(a.data.begin(), a.data.end());
      if (a.name == "layers.2.net.0.weight") v[3] = std::nanf("");
      entries.emplace_back(a.name, nn::encode_npy(v.data(), a.shape));
    }
  }
  fs::create_directories(dir / "nan");
  nn::write_npz((dir / "nan" / "model.npz").string(), entries);
  for (const std::string& cmd : {"eval --model " + (dir / "nan").string() + " --n 50",
                                "sample --model " + (dir / "nan").string() + " --n 5 --out " + (dir / "x.npy").string(),
                                "plot --model " + (dir / "nan").string() + " --out " + (dir / "figs").string()}) {
    CAPTURE(cmd);
    const Result r = run(cmd, dir);
    CHECK(r.code == 1);
    CHECK_MESSAGE(r.err.find("layers.2.net.0.weight") != std::string::npos, r.err);
    CHECK_MESSAGE(r.err.find("finite") != std::string::npos, r.err);
  }
  fs::remove_all(dir);
}

TEST_CASE("a run directory holds one run: another is refused without --force, a second writer by pid, stale temporaries go") {
  const fs::path dir = temp_dir("rundir");
  const fs::path out = dir / "run";
  REQUIRE(run(quick(out), dir).code == 0);
  // Class 10: a new run into a directory holding one is refused, and nothing of the old run changes.
  const std::string config_before = nn::read_file((out / "config.json").string());
  const Result again = run(quick(out) + " --seed 4", dir);
  CHECK(again.code == 2);
  CHECK_MESSAGE(again.err.find("--force") != std::string::npos, again.err);
  CHECK_MESSAGE(again.err.find("--resume") != std::string::npos, again.err);
  CHECK(nn::read_file((out / "config.json").string()) == config_before);
  const Result forced = run(quick(out) + " --seed 4 --force", dir);
  REQUIRE_MESSAGE(forced.code == 0, forced.err);
  CHECK(nn::read_file((out / "config.json").string()) != config_before);
  // Class 12: temporaries of a writer that died are removed when a run resumes; a live one's stay.
  pid_t dead = 0;
  for (pid_t p = 4000000; p > 1000; p -= 7919)
    if (::kill(p, 0) != 0 && errno == ESRCH) {
      dead = p;
      break;
    }
  REQUIRE(dead > 0);
  const fs::path stale = out / ("checkpoint.npz.tmp." + std::to_string(dead));
  const fs::path live = out / ("model.npz.tmp." + std::to_string(::getpid()));
  std::ofstream(stale) << "torn";
  std::ofstream(live) << "being written";
  // Class 13: while another process holds the directory's lock, a run there is refused with its pid.
  const int fd = ::open((out / ".trflow.lock").c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::flock(fd, LOCK_EX | LOCK_NB) == 0);
  const std::string me = std::to_string(::getpid()) + "\n";
  REQUIRE(::ftruncate(fd, 0) == 0);
  REQUIRE(::pwrite(fd, me.data(), me.size(), 0) == ssize_t(me.size()));
  const Result locked = run("train --resume --steps 90 --no-plots --eval-n 500 --out " + out.string(), dir);
  CHECK(locked.code == 1);
  CHECK_MESSAGE(locked.err.find("pid " + std::to_string(::getpid())) != std::string::npos, locked.err);
  CHECK(fs::exists(stale));  // the refused run touched nothing
  ::close(fd);
  const Result resumed = run("train --resume --steps 90 --no-plots --eval-n 500 --out " + out.string(), dir);
  REQUIRE_MESSAGE(resumed.code == 0, resumed.err);
  CHECK_FALSE(fs::exists(stale));
  CHECK(fs::exists(live));
  fs::remove_all(dir);
}

TEST_CASE("resuming a finished run changes nothing, and a shorter --steps is refused") {
  const fs::path dir = temp_dir("finished");
  const fs::path out = dir / "run";
  REQUIRE(run(quick(out), dir).code == 0);
  const std::string result = nn::read_file((out / "result.json").string());
  const std::string model = nn::read_file((out / "model.npz").string());
  const Result noop = run("train --resume --out " + out.string(), dir);
  CHECK(noop.code == 0);
  CHECK_MESSAGE(noop.err.find("already finished") != std::string::npos, noop.err);
  CHECK(last_json(noop.out).at("steps") == 60);
  CHECK(nn::read_file((out / "result.json").string()) == result);  // not rewritten with zeros
  CHECK(nn::read_file((out / "model.npz").string()) == model);
  const Result shorter = run("train --resume --steps 30 --out " + out.string(), dir);
  CHECK(shorter.code == 2);
  CHECK_MESSAGE(shorter.err.find("--steps 30") != std::string::npos, shorter.err);
  CHECK(nn::read_file((out / "model.npz").string()) == model);
  fs::remove_all(dir);
}

TEST_CASE("--skip-nonfinite stops when most batches are skipped and always reports the count") {
  const fs::path dir = temp_dir("skips");
  // Data around 1e30: every float32 NLL overflows, every batch is skipped.
  {
    std::ofstream csv(dir / "huge.csv");
    ad::Rng rng(1);
    for (int i = 0; i < 200; ++i) csv << 1e30 * (1 + rng.uniform()) << "," << -1e30 * (1 + rng.uniform()) << "\n";
  }
  const Result r = run("train --data " + (dir / "huge.csv").string() + " --skip-nonfinite --steps 300 --batch 64 "
                       "--layers 2 --hidden 16 --no-plots --out " + (dir / "run").string(), dir);
  CHECK(r.code == 1);
  CHECK_MESSAGE(r.err.find("were skipped") != std::string::npos, r.err);
  CHECK_MESSAGE(r.err.find("--standardize") != std::string::npos, r.err);  // the data's scale is named as the cause
  CHECK_FALSE(fs::exists(dir / "run" / "result.json"));
  fs::remove_all(dir);
}

TEST_CASE("data beyond float32 are refused by element, a FIFO without waiting, absurd sizes by their memory") {
  const fs::path dir = temp_dir("limits");
  {
    std::ofstream csv(dir / "big.csv");
    csv << "1,2\n3,1e300\n";
  }
  const Result big = run("train --data " + (dir / "big.csv").string() + " --steps 5 --out " + (dir / "a").string(), dir);
  CHECK(big.code == 1);
  CHECK_MESSAGE(big.err.find("line 2, column 2") != std::string::npos, big.err);
  CHECK_MESSAGE(big.err.find("float32") != std::string::npos, big.err);
  std::vector<double> v = {1.0, 2.0, -5e300, 4.0};
  nn::write_file_atomic((dir / "big.npy").string(), nn::encode_npy(v.data(), {2, 2}));
  const Result bign = run("train --data " + (dir / "big.npy").string() + " --steps 5 --out " + (dir / "b").string(), dir);
  CHECK(bign.code == 1);
  CHECK_MESSAGE(bign.err.find("element [1, 0]") != std::string::npos, bign.err);
  // A FIFO with no writer: refused at once (the test would hang otherwise).
  REQUIRE(::mkfifo((dir / "pipe.csv").c_str(), 0644) == 0);
  const Result fifo = run("train --data " + (dir / "pipe.csv").string() + " --steps 5 --out " + (dir / "c").string(), dir);
  CHECK(fifo.code == 1);
  CHECK_MESSAGE(fifo.err.find("FIFO") != std::string::npos, fifo.err);
  // Sizes in the billions: a usage error with the flag, the estimate and the machine's memory.
  for (const std::string& flags : {std::string("--batch 4000000000"), std::string("--hidden 2000000"),
                                   std::string("--layers 300000000"), std::string("--eval-n 90000000000")}) {
    CAPTURE(flags);
    const Result r = run("train " + flags + " --steps 5 --out " + (dir / "d").string(), dir);
    CHECK(r.code == 2);
    CHECK_MESSAGE(r.err.find(flags.substr(0, flags.find(' ')) + ":") != std::string::npos, r.err);
    CHECK_MESSAGE(r.err.find("GiB") != std::string::npos, r.err);
    CHECK_MESSAGE(r.err.find("held by the data 8gaussians") != std::string::npos, r.err);
  }
  const fs::path model = fs::path(TRFLOW_TEST_DATA) / "model_v0.1";
  const Result many = run("sample --model " + model.string() + " --n 900000000000 --out " + (dir / "s.npy").string(), dir);
  CHECK(many.code == 2);
  CHECK_MESSAGE(many.err.find("--n") != std::string::npos, many.err);
  const Result evals = run("eval --model " + model.string() + " --n 900000000000", dir);
  CHECK(evals.code == 2);
  fs::remove_all(dir);
}

TEST_CASE("small data files: under 20 training rows per dimension 8 affine couplings, a batch of half the rows") {
  const fs::path dir = temp_dir("smalldata");
  auto write = [&](const std::string& name, std::size_t n, std::size_t d) {
    std::vector<double> rows(n * d);
    ad::Rng rng(n + d);
    rng.fill_normal(rows.data(), rows.size(), 0.0, 1.0);
    nn::write_file_atomic((dir / name).string(), nn::encode_npy(rows.data(), {n, d}));
    return (dir / name).string();
  };
  const std::string narrow = write("narrow.npy", 100, 8), tall = write("tall.npy", 1000, 2);
  const std::string common = "train --steps 20 --hidden 8 --eval-n 200 --no-plots --quiet --out ";
  // 90 training rows in 8 dimensions: 11 per dimension; half of 90 is below the floor of 64.
  REQUIRE(run(common + (dir / "a").string() + " --data " + narrow, dir).code == 0);
  CHECK(config_of(dir / "a").at("coupling") == "affine");
  CHECK(config_of(dir / "a").at("layers") == 8);
  CHECK(config_of(dir / "a").at("batch") == 64);
  // 900 rows in 2 dimensions: the spline default, a batch of 450.
  REQUIRE(run(common + (dir / "b").string() + " --data " + tall, dir).code == 0);
  CHECK(config_of(dir / "b").at("coupling") == "rqs");
  CHECK(config_of(dir / "b").at("layers") == 4);
  CHECK(config_of(dir / "b").at("batch") == 450);
  // Flags given win; a built-in generator keeps the defaults.
  REQUIRE(run(common + (dir / "c").string() + " --data " + narrow + " --coupling rqs --batch 32", dir).code == 0);
  CHECK(config_of(dir / "c").at("coupling") == "rqs");
  CHECK(config_of(dir / "c").at("layers") == 4);
  CHECK(config_of(dir / "c").at("batch") == 32);
  REQUIRE(run(common + (dir / "d").string() + " --data moons", dir).code == 0);
  CHECK(config_of(dir / "d").at("coupling") == "rqs");
  CHECK(config_of(dir / "d").at("batch") == 512);
  fs::remove_all(dir);
}

TEST_CASE("data-file defaults: dropout 0.2 (0 for built-in sets), the starting model validated at step 0, --init gaussian") {
  const fs::path dir = temp_dir("filedefaults");
  std::vector<double> rows(200 * 3);
  ad::Rng rng(2);
  for (std::size_t i = 0; i < 200; ++i) {
    const double z = rng.normal();
    rows[i * 3] = 2 + 3 * z;
    rows[i * 3 + 1] = z + 0.1 * rng.normal();
    rows[i * 3 + 2] = rng.normal();
  }
  const fs::path data = dir / "rows.npy";
  nn::write_file_atomic(data.string(), nn::encode_npy(rows.data(), {200, 3}));
  REQUIRE(run(quick(dir / "file") + " --data " + data.string(), dir).code == 0);
  CHECK(config_of(dir / "file").at("dropout") == 0.2);
  CHECK(config_of(dir / "file").at("init") == "identity");
  REQUIRE(run(quick(dir / "gen") + " --data moons", dir).code == 0);
  CHECK(config_of(dir / "gen").at("dropout") == 0.0);
  // --init gaussian: at step 0 the flow is the Gaussian fitted to the training rows, so its
  // validation NLL there is about the Gaussian's (the data are close to Gaussian: within 0.3 nats
  // of the generating density's entropy), far below the identity start's.
  const Result g = run(quick(dir / "gauss") + " --data " + data.string() + " --init gaussian", dir);
  REQUIRE_MESSAGE(g.code == 0, g.err);
  const Result id = run(quick(dir / "id") + " --data " + data.string() + " --dropout 0", dir);
  REQUIRE(id.code == 0);
  auto first_val = [](const fs::path& metrics) {
    std::ifstream in(metrics);
    std::string line;
    std::getline(in, line);
    const nlohmann::json j = nlohmann::json::parse(line);
    REQUIRE(j.at("step") == 0);
    return j.at("val_nll").get<double>();
  };
  // Entropy of the generating density: x1 = 2 + 3z, x2 = z + 0.1e, x3 ~ N(0, 1): log(3·0.1) + 3·½ log(2πe).
  const double entropy = std::log(0.3) + 1.5 * std::log(2 * M_PI * std::exp(1.0));
  CHECK(std::abs(first_val(dir / "gauss" / "metrics.jsonl") - entropy) < 0.3);
  CHECK(first_val(dir / "id" / "metrics.jsonl") > entropy + 1.0);
  fs::remove_all(dir);
}
#endif

#ifdef TRFLOW_HAVE_APP
TEST_CASE("--preset ot fills in the recipe, explicit flags override it, and compare trains it against β = 0") {
  trflow::TrainOptions o;
  o.preset = "ot";
  trflow::apply_preset(o);
  CHECK(o.structure == "steps");
  CHECK(o.layers == 6);
  CHECK(o.transport_weight == 0.1);
  CHECK(o.transport_schedule == "cosine");
  CHECK(o.transport_floor == 0.0);
  CHECK(o.steps == 20000);
  trflow::TrainOptions e;
  e.preset = "ot";
  e.layers = 2;
  e.transport_weight = 0.02;
  e.explicit_flags = {"--layers", "--transport-weight"};
  trflow::apply_preset(e);
  CHECK(e.layers == 2);
  CHECK(e.transport_weight == 0.02);
  CHECK(e.structure == "steps");
  trflow::TrainOptions n;  // no preset: nothing changes
  trflow::apply_preset(n);
  CHECK(n.structure == "layers");
  CHECK(n.transport_weight == 0.01);

  const fs::path dir = temp_dir("preset");
  const Result t = run("train --preset ot --data gaussian:2 --steps 40 --batch 64 --hidden 16 --eval-n 500 --no-plots "
                       "--out " + (dir / "run").string(), dir);
  REQUIRE_MESSAGE(t.code == 0, t.err);
  const nlohmann::json config = config_of(dir / "run");
  CHECK(config.at("preset") == "ot");
  CHECK(config.at("structure") == "steps");
  CHECK(config.at("steps") == 40);
  CHECK(config.at("transport_schedule") == "cosine");
  // Resume keeps the preset's resolved settings (the checkpoint's), and --preset none conflicts with it.
  const Result r = run("train --resume --steps 50 --eval-n 500 --no-plots --out " + (dir / "run").string(), dir);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(last_json(r.out).at("steps") == 50);
  const Result bad = run("train --resume --preset none --steps 60 --out " + (dir / "run").string(), dir);
  CHECK(bad.code == 2);
  CHECK(bad.err.find("--preset") != std::string::npos);

  const Result c = run("compare --preset ot --data gaussian:2 --steps 30 --batch 64 --hidden 16 --eval-n 500 "
                       "--no-plots --out " + (dir / "cmp").string(), dir);
  REQUIRE_MESSAGE(c.code == 0, c.err);
  const nlohmann::json with = config_of(dir / "cmp" / "with_transport"), without = config_of(dir / "cmp" / "without_transport");
  CHECK(with.at("structure") == "steps");
  CHECK(without.at("structure") == "steps");  // the same flow
  CHECK(with.at("transport_weight") == 0.1);
  CHECK(without.at("transport_weight") == 0.0);
  CHECK(fs::exists(dir / "cmp" / "trajectories_compare.png"));
  fs::remove_all(dir);
}

TEST_CASE("train --config reruns a saved configuration bitwise, explicit flags override it") {
  const fs::path dir = temp_dir("config");
  REQUIRE(run(quick(dir / "a") + " --data moons --seed 3 --transport-weight 0.05", dir).code == 0);
  const std::string cfg = (dir / "a" / "config.json").string();
  const Result again = run("train --config " + cfg + " --no-plots --out " + (dir / "b").string(), dir);
  REQUIRE_MESSAGE(again.code == 0, again.err);
  CHECK(nn::read_file((dir / "a" / "model.npz").string()) == nn::read_file((dir / "b" / "model.npz").string()));
  CHECK(nn::read_file(cfg) == nn::read_file((dir / "b" / "config.json").string()));
  const Result over = run("train --config " + cfg + " --steps 30 --no-plots --out " + (dir / "c").string(), dir);
  REQUIRE_MESSAGE(over.code == 0, over.err);
  const nlohmann::json c = config_of(dir / "c");
  CHECK(c.at("steps") == 30);
  CHECK(c.at("seed") == 3);
  CHECK(c.at("data") == "moons");
  CHECK(c.at("transport_weight") == 0.05);
  CHECK(run("train --config " + cfg + " --resume --out " + (dir / "a").string(), dir).code == 2);
  std::ofstream(dir / "bad.json") << "{\"steps\": \"many\"}";
  const Result bad = run("train --config " + (dir / "bad.json").string() + " --out " + (dir / "d").string(), dir);
  CHECK(bad.code == 1);
  CHECK_MESSAGE(bad.err.find("steps") != std::string::npos, bad.err);
  fs::remove_all(dir);
}
#endif

#ifdef TRFLOW_HAVE_APP
TEST_CASE("trflow mfg: crowd at λ_F = 0 is the straight translation, avoidance grows with λ_F, eval and sample know it") {
  const fs::path dir = temp_dir("mfg");
  // (Short runs: about 2.6 % L2-UVP after 1 500 steps, 1.2 % after 2 500; docs/mfg.md has full ones.)
  const std::string common = "mfg --problem crowd --hidden 32 --layers 2 --batch 256 --eval-n 2000 --no-plots --quiet --out ";
  const nlohmann::json a = run_ok(common + (dir / "free").string() + " --steps 1500 --cost-weight 0", dir);
  CHECK(a.at("problem") == "crowd");
  CHECK(a.at("l2_uvp").get<double>() < 5.0);  // against x ↦ x − 6e₂ (the goal, 1 %, with the defaults: docs/mfg.md)
  CHECK(a.at("forward_kl").get<double>() < 0.05);
  CHECK(a.at("kinetic_energy").get<double>() == doctest::Approx(36.0).epsilon(0.1));  // ‖6e₂‖²
  const nlohmann::json b = run_ok(common + (dir / "avoid").string() + " --steps 1000 --cost-weight 2.5", dir);
  CHECK(b.at("inside_obstacle").get<double>() < 0.5 * a.at("inside_obstacle").get<double>());
  CHECK(b.at("running_cost").get<double>() < 0.5 * a.at("running_cost").get<double>());
  CHECK(b.at("kinetic_energy").get<double>() > a.at("kinetic_energy").get<double>());  // the detour costs
  // eval reports the game's terms; sample's trajectories hold the K + 1 = 3 time points.
  check_eval_and_trajectories(dir / "avoid",
                              {"kinetic_energy", "running_cost", "inside_obstacle", "forward_kl", "reverse_kl", "jeffreys"},
                              {3, 10, 2}, dir);
  // Flags that do not apply are refused.
  CHECK(run("mfg --problem gmm --cost-weight 1 --out " + (dir / "x").string(), dir).code == 2);
  CHECK(run("mfg --problem crowd --data moons --out " + (dir / "x").string(), dir).code == 2);
  CHECK(run("mfg --problem crowd --dim 1 --out " + (dir / "x").string(), dir).code == 2);
  CHECK(run("train --data moons --loss jeffreys --out " + (dir / "x").string(), dir).code == 2);
  fs::remove_all(dir);
}
#endif

#ifdef TRFLOW_HAVE_APP
TEST_CASE("trflow mfg: drones2 groups reach their corners, interact less as λ_F grows, and eval, sample and plot know them") {
  const fs::path dir = temp_dir("drones");
  const std::string common = "mfg --problem drones2 --hidden 16 --batch 256 --steps 800 --eval-n 2000 --quiet --out ";
  const nlohmann::json a = run_ok(common + (dir / "free").string() + " --cost-weight 0 --no-plots", dir);
  const nlohmann::json b = run_ok(common + (dir / "avoid").string() + " --cost-weight 5", dir);
  for (const auto* r : {&a, &b}) {
    CHECK(r->at("problem") == "drones2");
    CHECK(r->at("arrived_share").get<double>() > 0.95);  // every group within 3σ√2 of its target's mean
    CHECK(r->at("arrival_error").get<double>() < 0.05);
  }
  // Crossing straight, the groups meet mid-way: ∫₀¹ exp(−(1 − 2t)²/2) dt ≈ 0.86.
  CHECK(a.at("interaction").get<double>() > 0.7);
  CHECK(b.at("interaction").get<double>() < 0.85 * a.at("interaction").get<double>());  // (0.29 of it at this seed)
  CHECK(b.at("kinetic_energy").get<double>() > a.at("kinetic_energy").get<double>());
  CHECK(fs::exists(dir / "avoid" / "trajectories.png"));
  check_eval_and_trajectories(dir / "avoid",
                              {"kinetic_energy", "running_cost", "interaction", "arrival_error", "forward_kl", "jeffreys"},
                              {5, 10, 4}, dir);  // 4 steps, 2 groups × 2 coordinates
  CHECK(run("mfg --problem drones2 --dim 2 --out " + (dir / "x").string(), dir).code == 2);
  CHECK(run("mfg --problem drones8 --lu --out " + (dir / "x").string(), dir).code == 2);
  fs::remove_all(dir);
}
#endif

#ifdef TRFLOW_MPIEXEC
TEST_CASE("SIGTERM on mpirun: the ranks stop at one step, rank 0 saves one checkpoint, one process resumes it") {
  const fs::path dir = temp_dir("mpisignal");
  const fs::path m = dir / "m";
  const std::string common = "train --steps 100000 --batch 128 --layers 2 --hidden 16 --eval-n 200 --no-plots "
                             "--threads 1 --quiet --out ";
  // mpirun forwards the SIGTERM to both ranks, then kills what is left a second later
  const int status = signal_mid_run(mpirun_prefix(2), common + m.string(), m, dir / "err.txt", SIGTERM, 500, 120);
  CHECK(!(WIFEXITED(status) && WEXITSTATUS(status) == 0));  // the job did not finish
  REQUIRE(fs::exists(m / "checkpoint.npz"));
  const std::string err = nn::read_file((dir / "err.txt").string());
  CHECK_MESSAGE(err.find("terminated (SIGTERM) at step") != std::string::npos, err);
  // Rank 0 alone says it (and saved), once; no temporary is left behind.
  CHECK(err.find("terminated (SIGTERM)") == err.rfind("terminated (SIGTERM)"));
  for (const auto& e : fs::directory_iterator(m))
    CHECK_MESSAGE(e.path().filename().string().find(".tmp.") == std::string::npos, e.path().string());
  // One process continues from the step the ranks agreed on, 20 steps further.
  const auto at = err.find("at step ");
  REQUIRE(at != std::string::npos);
  const long step = std::stol(err.substr(at + 8));
  CHECK(step >= 1);
  const Result resumed = run("train --resume --steps " + std::to_string(step + 20) + " --quiet --out " + m.string(), dir);
  CHECK_MESSAGE(resumed.code == 0, resumed.err);
  CHECK(last_json(resumed.out).at("steps") == step + 20);
  fs::remove_all(dir);
}

TEST_CASE("mpirun -np 2 trflow train: the bits of --threads 2, one set of files, resumable on another number of ranks") {
  const fs::path dir = temp_dir("mpi");
  // (a schedule that does not depend on --steps, so that a run can be continued to 40 steps)
  const std::string common = "train --batch 256 --layers 2 --hidden 16 --eval-n 500 --no-plots --seed 4 "
                             "--lr-schedule constant --warmup 0 --out ";
  const Result ranks = run_mpi(2, common + (dir / "ranks").string() + " --steps 40", dir);
  REQUIRE_MESSAGE(ranks.code == 0, ranks.err);
  CHECK(last_json(ranks.out).at("ranks") == 2);
  CHECK(ranks.err.find("2 ranks × 1 threads") != std::string::npos);
  const Result threads = run(common + (dir / "threads").string() + " --steps 40 --threads 2", dir);
  REQUIRE_MESSAGE(threads.code == 0, threads.err);
  auto a = params_of(dir / "ranks" / "checkpoint.npz"), b = params_of(dir / "threads" / "checkpoint.npz");
  a.erase("validation"), b.erase("validation");  // (JSON text naming the thread count)
  REQUIRE(a.size() == b.size());
  CHECK(a == b);  // every parameter and Adam moment, bit for bit
  // One metrics file with one line per logged step (rank 0 alone writes).
  std::ifstream metrics(dir / "ranks" / "metrics.jsonl");
  std::string line;
  std::vector<int> steps;
  while (std::getline(metrics, line)) steps.push_back(nlohmann::json::parse(line).at("step").get<int>());
  REQUIRE(!steps.empty());
  CHECK(std::adjacent_find(steps.begin(), steps.end(), [](int x, int y) { return y <= x; }) == steps.end());

  // 20 steps on 3 ranks, then 20 more in one process: the same run up to float32 summation order.
  const Result first = run_mpi(3, common + (dir / "resumed").string() + " --steps 20", dir);
  REQUIRE_MESSAGE(first.code == 0, first.err);
  const Result second = run("train --resume --steps 40 --no-plots --out " + (dir / "resumed").string(), dir);
  REQUIRE_MESSAGE(second.code == 0, second.err);
  const auto c = params_of(dir / "resumed" / "checkpoint.npz");
  double worst = 0, scale = 0;
  for (const auto& [name, values] : a) {
    REQUIRE(c.count(name) == 1);
    for (std::size_t i = 0; i < values.size(); ++i) {
      worst = std::max(worst, std::abs(values[i] - c.at(name)[i]));
      scale = std::max(scale, std::abs(values[i]));
    }
  }
  CHECK(worst <= 1e-4 * scale);

  const Result eval = run_mpi(2, "eval --model " + (dir / "ranks").string(), dir);
  CHECK(eval.code == 2);
  CHECK_MESSAGE(eval.err.find("only train and mfg run under mpirun") != std::string::npos, eval.err);
  fs::remove_all(dir);
}
#endif
