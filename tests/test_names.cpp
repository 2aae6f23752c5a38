// Each enum's name table (autodiff/names.hpp): names and values are one-to-one, parsing and
// printing round-trip, and an unknown name is refused with every choice listed.
#include <set>
#include <string>

#include <doctest/doctest.h>

#include "flows/train.hpp"
#include "nn/init.hpp"

namespace {

template <class E, std::size_t N>
void check_table(const ad::NameTable<E, N>& table, E (*parse)(const std::string&), const char* (*print)(E)) {
  std::set<std::string> names;
  std::set<int> values;
  for (const auto& row : table) {
    const E value = row.first;
    const char* const name = row.second;  // not a structured binding: CAPTURE's lambda needs C++20 for those (clang)
    CAPTURE(name);
    names.insert(name);
    values.insert(int(value));
    CHECK(parse(name) == value);
    CHECK(std::string(print(value)) == name);
  }
  CHECK(names.size() == N);
  CHECK(values.size() == N);
  try {
    parse("no-such-name");
    FAIL("an unknown name was accepted");
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    CHECK(what.find("'no-such-name'") != std::string::npos);
    for (const std::string& n : names) CHECK_MESSAGE(what.find(n) != std::string::npos, what);
  }
}

}  // namespace

TEST_CASE("name tables: every enum's names parse, print and list their choices from one table") {
  check_table(ad::kActivationNames, ad::activation_from_name, ad::activation_name);
  check_table(nn::kInitNames, nn::init_from_name, nn::init_name);
  check_table(nn::LrSchedule::kNames, nn::LrSchedule::kind_from_name, nn::LrSchedule::kind_name);
  check_table(flows::BetaSchedule::kNames, flows::BetaSchedule::kind_from_name, flows::BetaSchedule::kind_name);
  check_table(flows::kPermutationNames, flows::permutation_from_name, flows::permutation_name);
  check_table(flows::kCouplingNames, flows::coupling_kind_from_name, flows::coupling_kind_name);
  check_table(flows::kConditionerNames, flows::conditioner_from_name, flows::conditioner_name);
  check_table(flows::kStructureNames, flows::structure_from_name, flows::structure_name);
  check_table(flows::kDirectionNames, flows::direction_from_name, flows::direction_name);
  CHECK(ad::choices_of(flows::kCouplingNames) == "affine, additive or rqs");
  CHECK(ad::names_of(flows::kDirectionNames) == std::vector<std::string>{"gen", "norm"});
}
