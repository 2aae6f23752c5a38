// The test runner. ctest runs one TEST_CASE per process (--test-case=<name>); a
// filter that matches nothing would pass silently (doctest_discover_tests cuts a
// name at ';', for one), so a run in which no test case passed the filters fails.
#define DOCTEST_CONFIG_IMPLEMENT
#include <cstdio>

#include <doctest/doctest.h>

namespace {

bool g_nothing_ran = false;

struct NothingRanListener : doctest::IReporter {
  explicit NothingRanListener(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats& stats) override {
    g_nothing_ran = stats.numTestCasesPassingFilters == 0;
  }
  void test_case_start(const doctest::TestCaseData&) override {}
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};

}  // namespace

REGISTER_LISTENER("nothing_ran", 1, NothingRanListener);

int main(int argc, char** argv) {
  doctest::Context context(argc, argv);
  const int failures = context.run();
  if (context.shouldExit()) return failures;  // --help, --list-test-cases, …
  if (g_nothing_ran) {
    std::fprintf(stderr, "trflow_tests: no test case matched the filters\n");
    return 1;
  }
  return failures;
}
