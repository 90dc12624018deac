#!/usr/bin/env ruby
# frozen_string_literal: true

# Certificates from an ACME issuer, side by side: Unicorn with Nightmare!
# (`acme_certificate` in its ssl block) against Caddy 2.6, each against
# its own Pebble (Let's Encrypt's test server, real validation) on loopback:
#   1. spawn -> first HTTPS response verified against Pebble's root, with
#      fresh storage (BENCH_ACME_RUNS times each)
#   2. restarts on the same storage: new orders Pebble sees (0 wanted)
#   3. 90-second certificates under a client loop (a request every 0.3 s):
#      when the served certificate changes, and failed requests
# Caddy runs twice: with its defaults, which look for renewals every 10
# minutes (a 90 s certificate expires first), and with renew_interval 5s.
# Prints the figures and writes bench/results/acme.md.
#
#   rake bench_acme   (BENCH_ACME_RUNS=6, BENCH_ACME_TARGETS=nightmare,caddy,caddy-renew5s,
#                      BENCH_ACME_PHASES=first,restart,renewal)

require "fileutils"
require "json"
require "openssl"
require "socket"
require "time"
require "tmpdir"

ROOT = File.expand_path("..", __dir__)
require_relative "../support/local_processes"
require_relative "../support/pebble_server"
require_relative "machine"
UNICORN_BIN = LocalProcesses.unicorn_bin

%w[caddy pebble pebble-challtestsrv].each do |tool|
  system("command -v #{tool} >/dev/null", exception: false) or abort "bench needs #{tool}: run script/bench"
end

module AcmeBench
  HOST = "site.test" # challtestsrv resolves every name to 127.0.0.1
  RUNS = Integer(ENV.fetch("BENCH_ACME_RUNS", "6"))
  FIRST_DEADLINE = 30     # s per run until the first good response
  RENEW_VALIDITY = 90     # s certificate lifetime in the renewal phase
  RENEW_WATCH = 110       # s the renewal client loop runs at most
  RENEW_PERIOD = 0.3      # s between client requests

  def self.mono = Process.clock_gettime(Process::CLOCK_MONOTONIC)

  # Spawned child with bounded TERM -> KILL shutdown, by PID only.
  class Child
    def initialize(cmd, env:, log:, chdir:)
      @pid = Process.spawn(env, *cmd, in: File::NULL, out: [log, "w"], err: %i[child out], chdir: chdir)
    end

    # Reaps on exit and forgets the PID, so it is never signalled after reuse.
    def alive?
      return false unless @pid
      return true if Process.wait2(@pid, Process::WNOHANG).nil?

      @pid = nil
      false
    rescue Errno::ECHILD
      @pid = nil
      false
    end

    def stop(grace: 10, signal: "TERM")
      return unless alive?

      Process.kill(signal, @pid)
      deadline = AcmeBench.mono + grace
      sleep 0.02 while alive? && AcmeBench.mono < deadline
      return unless alive?

      Process.kill("KILL", @pid)
      Process.wait(@pid)
      @pid = nil
    rescue Errno::ESRCH, Errno::ECHILD
      @pid = nil
    end
  end

  # Caddy 2.6 driven by a generated Caddyfile; loopback only, admin off.
  class CaddyTarget
    attr_reader :name, :https_port

    def initialize(pebble:, http_port:, https_port:, workdir:, name: "caddy", renew_interval: nil)
      @pebble = pebble
      @http_port = http_port
      @https_port = https_port
      @workdir = workdir
      @name = name
      @renew_interval = renew_interval # nil = Caddy default (10m)
      @starts = 0
    end

    def start(storage_dir)
      raise "#{@name} already running" if @child

      FileUtils.mkdir_p(storage_dir)
      conf = File.join(@workdir, "#{@name}.Caddyfile")
      File.write(conf, caddyfile(storage_dir))
      # HOME/XDG point into workdir so Caddy's autosave etc. stay out of ~.
      env = %w[HOME XDG_CONFIG_HOME XDG_DATA_HOME].to_h { |k| [k, File.join(@workdir, "home")] }
      log = File.join(@workdir, "#{@name}-#{@starts += 1}.log")
      @child = Child.new(["caddy", "run", "--config", conf, "--adapter", "caddyfile"],
                         env: env, log: log, chdir: @workdir)
      self
    end

    def stop
      @child&.stop
      @child = nil
    end

    def alive? = @child&.alive?

    private

    def caddyfile(storage_dir)
      <<~CADDY
        {
        	admin off
        	acme_ca #{@pebble.directory_url}
        	acme_ca_root #{@pebble.ca_file}
        	http_port #{@http_port}
        	https_port #{@https_port}
        	default_bind 127.0.0.1
        	storage file_system #{storage_dir}
        	skip_install_trust
        #{@renew_interval ? "\trenew_interval #{@renew_interval}\n" : ""}}
        #{HOST} {
        	respond "hello from #{@name}"
        }
      CADDY
    end
  end

  # Unicorn (one worker, the bench app) with Nightmare!: a plain listener
  # for HTTP-01 and an ssl block that orders HOST's certificate.
  class NightmareTarget
    attr_reader :name, :https_port

    def initialize(pebble:, http_port:, https_port:, workdir:)
      @pebble = pebble
      @http_port = http_port
      @https_port = https_port
      @workdir = workdir
      @name = "nightmare"
      @starts = 0
    end

    def start(storage_dir)
      raise "#{@name} already running" if @child

      FileUtils.mkdir_p(storage_dir)
      run_dir = File.join(@workdir, "unicorn-#{@starts += 1}")
      FileUtils.mkdir_p(run_dir)
      FileUtils.cp(File.join(ROOT, "bench", "app.ru"), File.join(run_dir, "config.ru"))
      File.write(File.join(run_dir, "unicorn.conf.rb"), config(storage_dir, run_dir))
      @child = Child.new([RbConfig.ruby, UNICORN_BIN, "-c", "unicorn.conf.rb", "config.ru"],
                         env: { "RUBYLIB" => File.join(ROOT, "lib"), "RACK_ENV" => "none" },
                         log: File.join(run_dir, "launch.log"), chdir: run_dir)
      self
    end

    # QUIT: Unicorn's graceful stop, as an operator's restart would be.
    def stop
      @child&.stop(signal: "QUIT")
      @child = nil
    end

    def alive? = @child&.alive?

    private

    def config(storage_dir, run_dir)
      <<~CONFIG
        require "nightmare"
        worker_processes 1
        stderr_path #{File.join(run_dir, 'stderr.log').inspect}
        pid #{File.join(run_dir, 'unicorn.pid').inspect}
        nightmare true
        listen "127.0.0.1:#{@http_port}"
        ssl do
          listen "127.0.0.1:#{@https_port}"
          acme_certificate #{HOST.inspect}
          acme_issuer #{@pebble.directory_url.inspect}, ca_file: #{@pebble.ca_file.inspect},
                      state_path: #{storage_dir.inspect}, accept_terms_of_service: true
        end
      CONFIG
    end
  end

  TARGETS = {
    "nightmare" => ->(**kw) { NightmareTarget.new(**kw) },
    "caddy" => ->(**kw) { CaddyTarget.new(**kw) },
    # Caddy's maintenance loop only checks renewals every 10 min by default.
    "caddy-renew5s" => ->(**kw) { CaddyTarget.new(**kw, name: "caddy-renew5s", renew_interval: "5s") }
  }.freeze

  # One TLS connection + GET /, verified against Pebble's issuing root, SNI=HOST.
  class Probe
    Result = Struct.new(:ok, :serial, :not_before, :not_after, :error, keyword_init: true)

    def initialize(root_pem, port, timeout: 2)
      @store = OpenSSL::X509::Store.new
      @store.add_cert(OpenSSL::X509::Certificate.new(root_pem))
      @port = port
      @timeout = timeout
    end

    def call
      sock = Socket.tcp("127.0.0.1", @port, connect_timeout: @timeout)
      ssl = OpenSSL::SSL::SSLSocket.new(sock, context)
      ssl.hostname = HOST
      ssl.sync_close = true
      wait_io(ssl) { ssl.connect_nonblock(exception: false) }
      cert = ssl.peer_cert
      ssl.write("GET / HTTP/1.1\r\nHost: #{HOST}\r\nConnection: close\r\n\r\n")
      status = read_status(ssl)
      Result.new(ok: status == "200", serial: cert.serial.to_s(16), not_before: cert.not_before,
                 not_after: cert.not_after, error: status == "200" ? nil : "HTTP #{status}")
    rescue SystemCallError, OpenSSL::SSL::SSLError, IOError, SocketError => e
      Result.new(ok: false, error: "#{e.class}: #{e.message.sub(/peeraddr=\S+ /, "")[0, 120]}")
    ensure
      ssl ? ssl.close : sock&.close
    end

    private

    def context
      ctx = OpenSSL::SSL::SSLContext.new
      ctx.cert_store = @store
      ctx.verify_mode = OpenSSL::SSL::VERIFY_PEER
      ctx.verify_hostname = true
      ctx.alpn_protocols = ["http/1.1"]
      ctx
    end

    def read_status(ssl)
      buf = +""
      buf << wait_io(ssl) { ssl.read_nonblock(1024, exception: false) }.to_s until buf.include?("\r\n")
      buf[%r{\AHTTP/1\.[01] (\d{3})}, 1]
    end

    # Runs a *_nonblock call until it completes, bounded by @timeout.
    def wait_io(io)
      deadline = AcmeBench.mono + @timeout
      loop do
        r = yield
        case r
        when :wait_readable then IO.select([io], nil, nil, 0.05)
        when :wait_writable then IO.select(nil, [io], nil, 0.05)
        when nil then raise IOError, "EOF"
        else return r
        end
        raise IOError, "timeout" if AcmeBench.mono > deadline
      end
    end
  end

  # Runs the three phases for one target builder.
  class Harness
    def initialize(name, builder, workdir)
      @name = name
      @builder = builder
      @workdir = File.join(workdir, name)
      FileUtils.mkdir_p(@workdir)
      @http_port, @https_port = PebbleServer.free_ports(2)
    end

    def run(phases)
      out = { target: @name, http_port: @http_port, https_port: @https_port }
      if (phases & %w[first restart]).any?
        with_pebble("pebble-main") do |pebble, target|
          out[:first_https] = phase_first(pebble, target) if phases.include?("first")
          out[:restart] = phase_restart(pebble, target) if phases.include?("restart")
        end
      end
      if phases.include?("renewal")
        with_pebble("pebble-renew", validity: RENEW_VALIDITY) do |pebble, target|
          out[:renewal] = phase_renewal(pebble, target)
        end
      end
      out
    end

    private

    def with_pebble(dirname, validity: nil)
      pebble = PebbleServer.new(dir: File.join(@workdir, dirname), http_port: @http_port,
                                tls_port: @https_port, validity: validity)
      pebble.start
      target = @builder.call(pebble: pebble, http_port: @http_port, https_port: @https_port, workdir: @workdir)
      yield pebble, target
    ensure
      target&.stop
      pebble&.stop
    end

    def phase_first(pebble, target)
      runs = Array.new(RUNS) do |i|
        before = pebble.issued_count
        t0 = AcmeBench.mono
        target.start(File.join(@workdir, "storage-first-#{i}"))
        res = wait_first_ok(pebble, target, t0)
        target.stop
        res.merge(issued: pebble.issued_count - before).tap { |r| log("first ##{i}: #{r}") }
      end
      times = runs.filter_map { |r| r[:seconds] }
      { runs: runs, failed_runs: runs.count { |r| r[:seconds].nil? } }.merge(stats(times))
    end

    def phase_restart(pebble, target)
      storage = File.join(@workdir, "storage-restart")
      target.start(storage) # the initial issuance, not counted
      wait_first_ok(pebble, target, AcmeBench.mono)
      target.stop
      orders0 = pebble.orders_count
      issued0 = pebble.issued_count
      runs = Array.new(RUNS) do |i|
        t0 = AcmeBench.mono
        target.start(storage)
        res = wait_first_ok(pebble, target, t0)
        target.stop
        res.tap { |r| log("restart ##{i}: #{r}") }
      end
      times = runs.filter_map { |r| r[:seconds] }
      { runs: runs, new_orders: pebble.orders_count - orders0,
        new_certificates: pebble.issued_count - issued0 }.merge(stats(times))
    end

    def phase_renewal(pebble, target)
      probe = Probe.new(pebble.root_pem, @https_port)
      target.start(File.join(@workdir, "storage-renewal"))
      first = wait_first_ok(pebble, target, AcmeBench.mono)
      return { error: "no first certificate", first: first } unless first[:seconds]

      samples = 0
      failures = Hash.new(0)
      certs = [] # one entry per distinct served certificate
      deadline = AcmeBench.mono + RENEW_WATCH
      while AcmeBench.mono < deadline
        tick = AcmeBench.mono
        r = probe.call
        samples += 1
        if r.ok
          if certs.empty? || certs.last[:serial] != r.serial
            certs << { serial: r.serial, not_before: r.not_before.utc.iso8601, not_after: r.not_after.utc.iso8601,
                       first_seen: Time.now.utc.iso8601(3), nb: r.not_before, na: r.not_after, seen: Time.now }
            log("renewal: serving #{r.serial} (#{r.not_before.utc} .. #{r.not_after.utc})")
          end
        else
          failures[r.error] += 1
        end
        rest = RENEW_PERIOD - (AcmeBench.mono - tick)
        sleep rest if rest.positive?
      end
      renewal_summary(certs, samples, failures, pebble)
    end

    def renewal_summary(certs, samples, failures, pebble)
      changes = certs.each_cons(2).map do |old, new|
        life = old[:na] - old[:nb]
        { old_serial: old[:serial], new_serial: new[:serial],
          # when the new cert was issued (its notBefore) / when clients first saw it
          issued_at_fraction: ((new[:nb] - old[:nb]) / life).round(3),
          seen_at_fraction: ((new[:seen] - old[:nb]) / life).round(3) }
      end
      { lifetime_seconds: certs.first && (certs.first[:na] - certs.first[:nb]).round,
        samples: samples, failures: failures.values.sum, failure_kinds: failures,
        certificates_seen: certs.map { |c| c.except(:nb, :na, :seen) },
        renewals: changes, pebble_issued_total: pebble.issued_count }
    end

    # Polls every 50 ms until a verified 200, the child dies, or the deadline.
    def wait_first_ok(pebble, target, t0)
      probe = Probe.new(pebble.root_pem, target.https_port, timeout: 1)
      attempts = 0
      last = nil
      while AcmeBench.mono - t0 < FIRST_DEADLINE
        attempts += 1
        last = probe.call
        return { seconds: (AcmeBench.mono - t0).round(3), attempts: attempts, serial: last.serial } if last.ok
        break if target.respond_to?(:alive?) && !target.alive?

        sleep 0.05
      end
      { seconds: nil, attempts: attempts, error: last&.error }
    end

    def stats(times)
      return {} if times.empty?

      s = times.sort
      mid = s.size / 2
      median = s.size.odd? ? s[mid] : (s[mid - 1] + s[mid]) / 2.0
      { min: s.first, median: median.round(3), max: s.last }
    end

    def log(msg) = warn("[#{@name}] #{msg}")
  end

  def self.main(argv)
    out_path = argv[0] || ENV["BENCH_ACME_JSON"]
    names = ENV.fetch("BENCH_ACME_TARGETS", "nightmare,caddy,caddy-renew5s").split(",")
    phases = ENV.fetch("BENCH_ACME_PHASES", "first,restart,renewal").split(",")
    workdir = ENV["BENCH_ACME_DIR"] || Dir.mktmpdir("acme-bench")
    warn "workdir #{workdir}"
    results = names.map do |n|
      Harness.new(n, TARGETS.fetch(n), workdir).run(phases)
    rescue StandardError => e # keep the other targets' figures
      warn "[#{n}] #{e.class}: #{e.message}\n#{e.backtrace.first(3).join("\n")}"
      { target: n, error: "#{e.class}: #{e.message}" }
    end
    text = report(results)
    puts text
    File.write(out_path, JSON.pretty_generate(results)) if out_path
    unless ENV["BENCH_ACME_TARGETS"] || ENV["BENCH_ACME_PHASES"]
      File.write(File.join(ROOT, "bench", "results", "acme.md"), markdown(results, text))
    end
    FileUtils.rm_rf(workdir) unless ENV["BENCH_ACME_DIR"]
    results
  end

  def self.markdown(results, text)
    ours = results.find { |r| r[:target] == "nightmare" }&.dig(:first_https, :median)
    caddy = results.find { |r| r[:target] == "caddy" }&.dig(:first_https, :median)
    ratio = ours && caddy ? format("%.2f", caddy / ours) : "n/a"
    <<~MD
      # ACME against Pebble: Nightmare! and Caddy 2.6

      #{Time.now.utc.strftime('%Y-%m-%d %H:%M UTC')}, #{Bench.machine}. `rake bench_acme`.

      Start to first HTTPS response, median: Caddy / Nightmare! = #{ratio} (above 1: Nightmare! is faster).

      ```
      #{text.strip}
      ```
    MD
  end

  def self.report(results)
    lines = []
    say = ->(line) { lines << line }
    results.each do |r|
      say.call "== #{r[:target]}"
      say.call "error: #{r[:error]}" if r[:error]
      if (f = r[:first_https])
        say.call format("first HTTPS (fresh storage, n=%d, failed %d): min %.2fs median %.2fs max %.2fs",
                    f[:runs].size, f[:failed_runs], f[:min] || 0, f[:median] || 0, f[:max] || 0)
      end
      if (x = r[:restart])
        say.call format("restart same storage (n=%d): new orders %d, new certs %d; first HTTPS median %.2fs",
                    x[:runs].size, x[:new_orders], x[:new_certificates], x[:median] || 0)
      end
      next unless (w = r[:renewal])

      say.call "renewal (#{w[:lifetime_seconds]}s certs): #{w[:renewals]&.size.to_i} renewal(s), " \
           "failures #{w[:failures]}/#{w[:samples]} #{w[:failure_kinds]}"
      w[:renewals]&.each do |c|
        say.call "  #{c[:old_serial]} -> #{c[:new_serial]}: issued at #{c[:issued_at_fraction]}, " \
             "first served at #{c[:seen_at_fraction]} of lifetime"
      end
    end
    lines.join("\n")
  end
end

AcmeBench.main(ARGV) if $PROGRAM_NAME == __FILE__
