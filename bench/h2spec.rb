#!/usr/bin/env ruby
# frozen_string_literal: true

# HTTP/2 conformance with h2spec (github.com/summerwind/h2spec), the suite
# users and reviewers run: Unicorn with Nightmare! (an ssl block) and, for
# comparison, nginx with `listen ... ssl http2` before the same Unicorn.
# Prints each server's tally and the cases it failed; writes
# bench/results/h2spec.md.
#
#   rake h2spec   (H2SPEC=/path/to/h2spec, else h2spec on PATH)
#
# h2spec is not packaged by Debian. With Go and rubygems-free access to
# GitHub: `go install github.com/summerwind/h2spec/cmd/h2spec@latest`, or its
# release binary. Offline on Debian 12, from a copy of its source: install
# golang-go and the Debian packages of its dependencies
# (golang-github-fatih-color-dev golang-github-spf13-cobra-dev
# golang-golang-x-net-dev golang-github-mattn-go-colorable-dev
# golang-github-mattn-go-isatty-dev golang-github-spf13-pflag-dev
# golang-golang-x-sys-dev), put the source at
# $GOPATH/src/github.com/summerwind/h2spec and run
# `GO111MODULE=off GOPATH=$GOPATH:/usr/share/gocode go build ./cmd/h2spec`.
require "tmpdir"
require "fileutils"
require "open3"

ROOT = File.expand_path("..", __dir__)
require_relative "../support/local_processes"
UNICORN_BIN = LocalProcesses.unicorn_bin
require_relative "tls_static_targets"
require_relative "machine"

H2SPEC = ENV.fetch("H2SPEC") { IO.popen(%w[sh -c command\ -v\ h2spec], &:read).strip }
abort "h2spec not found: set H2SPEC (see this file's head for how to get it)" if H2SPEC.empty? || !File.executable?(H2SPEC)

# [passed, total, failed case lines] of one h2spec run.
def h2spec(target)
  output, = Open3.capture2e(H2SPEC, "-t", "-k", "-h", "127.0.0.1", "-p", target.tls_port.to_s, "-o", "3")
  tally = output[/(\d+) tests, (\d+) passed, \d+ skipped, (\d+) failed/] ? [$2.to_i, $1.to_i] : [0, 0]
  failed = output.lines.grep(/×/).map { |line| line.split("×").reject { |part| part.strip.empty? }.first.strip }.uniq
  [*tally, failed]
end

results = {}
Dir.mktmpdir("nightmare-h2spec") do |root|
  site = Bench::Site.make(root)
  { "unicorn+nightmare" => Bench::NightmareTlsStatic, "nginx+unicorn" => Bench::NginxTlsStatic }.each do |name, kind|
    target = kind.new(name, File.join(root, name), site).start
    begin
      results[name] = h2spec(target)
    ensure
      target.stop
    end
  end
end

version = IO.popen([H2SPEC, "--version"], err: %i[child out], &:read).strip
lines = ["Run #{Time.now.utc.strftime('%Y-%m-%d %H:%M UTC')} on #{Bench.machine}; #{version}, over TLS (ALPN h2).", ""]
results.each do |name, (passed, total, failed)|
  lines << "- #{name}: #{passed} of #{total} passed"
  failed.each { |line| lines << "  - failed: #{line}" }
end
report = lines.join("\n")
puts report
FileUtils.mkdir_p(File.join(ROOT, "bench", "results"))
File.write(File.join(ROOT, "bench", "results", "h2spec.md"), "#{report}\n")
