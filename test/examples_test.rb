# frozen_string_literal: true

require_relative "test_helper"
require "open3"
$LOAD_PATH.unshift(File.join(ROOT, "lib"))
require "nightmare"

# The deployment examples users copy (examples/systemd, examples/Dockerfile)
# checked as far as this machine allows: systemd's own verifier for the
# units; the Dockerfile read instruction by instruction (no Docker daemon
# here to build it), and the config it runs loaded by Unicorn.
class ExamplesTest < Minitest::Test
  EXAMPLES = File.join(ROOT, "examples")
  DOCKERFILE_INSTRUCTIONS = %w[FROM RUN COPY ADD WORKDIR USER EXPOSE ENV ARG CMD ENTRYPOINT STOPSIGNAL LABEL
                               HEALTHCHECK VOLUME SHELL ONBUILD].freeze

  def test_the_systemd_units_pass_systemds_verifier
    verifier = ENV.fetch("PATH", "").split(":").map { |dir| File.join(dir, "systemd-analyze") }
                  .find { |path| File.executable?(path) }
    skip "systemd-analyze is not installed (Debian's systemd package has it)" unless verifier

    units = %w[unicorn.socket unicorn.service].map { |unit| File.join(EXAMPLES, "systemd", unit) }
    output, status = Open3.capture2e(verifier, "verify", *units)
    assert status.success?, output
    refute_match(/Failed|Unknown|ignoring/i, output, "no directive the verifier does not take")
    socket = File.read(units[0])
    assert_equal %w[0.0.0.0:80 0.0.0.0:443], socket.scan(/^ListenStream=(\S+)/).flatten,
                 "the addresses examples/internet.unicorn.conf.rb listens on"
    service = File.read(units[1])
    assert_match(/^KillSignal=SIGQUIT$/, service, "a stop lets requests in progress finish")
    assert_match(/^ExecReload=.*-HUP/, service)
  end

  def test_the_dockerfile_installs_the_platform_gem_without_rust_and_runs_a_config_that_loads
    lines = logical_lines(File.read(File.join(EXAMPLES, "Dockerfile")))
    lines.each do |line|
      assert_includes DOCKERFILE_INSTRUCTIONS, line.split.first.upcase, "not a Dockerfile instruction: #{line}"
    end
    assert_match(/\AFROM debian:\S+-slim\z/, lines.first)
    refute lines.any? { |line| line.match?(/cargo|rustc|rustup|build-essential|libclang/) }, "no Rust in the image"
    assert lines.any? { |line| line.match?(%r{\ACOPY pkg/nightmare-\*-x86_64-linux\.gem }) }, "the platform gem"
    lines.grep(/\ACOPY examples\//).each do |line|
      line.split[1..-2].each do |source|
        assert File.exist?(File.join(ROOT, source)), "#{source} is copied but not in the repository"
      end
    end
    cmd = lines.find { |line| line.start_with?("CMD ") }
    config = JSON.parse(cmd.delete_prefix("CMD ")).then { |argv| argv[argv.index("-c") + 1] }
    assert_equal "STOPSIGNAL SIGQUIT", lines.find { |line| line.start_with?("STOPSIGNAL") }
    loaded = with_environment("PORT" => nil, "WEB_CONCURRENCY" => nil) do
      Unicorn::Configurator.new(config_file: File.join(EXAMPLES, config), use_defaults: true)
    end
    assert_equal ["0.0.0.0:8080"], loaded.set[:listeners]
    assert_kind_of Nightmare::Options, loaded.set[:nightmare]
  end

  private

  def with_environment(values)
    saved = values.keys.to_h { |name| [name, ENV.fetch(name, nil)] }
    values.each { |name, value| ENV[name] = value }
    yield
  ensure
    saved&.each { |name, value| ENV[name] = value }
  end

  # Instructions with their continuation lines joined, comments dropped.
  def logical_lines(text)
    text.gsub(/\\\n/, " ").lines.map(&:strip).reject { |line| line.empty? || line.start_with?("#") }
        .map { |line| line.squeeze(" ") }
  end
end
