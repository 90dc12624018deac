# frozen_string_literal: true

require_relative "../../support/test_hosts"

# A Unicorn on a TestHost, as on another machine: the gem loaded, nightmare
# off, listening on the host's address, marked proxy_protocol for a front
# at the host's near side unless told otherwise. Its app says which host
# it is (/host).
class RemoteUnicorn
  PORT = 8080

  attr_reader :host, :dir

  # +fronts+: the addresses its proxy_protocol listener takes connections
  # from (the host's near side, where a front on this machine connects from).
  def initialize(host, workers: 2, proxy_protocol: true, fronts: [host.near], config: "")
    @host = host
    @workers = workers
    @dir = Dir.mktmpdir("nightmare-remote")
    marks = proxy_protocol ? %(, proxy_protocol: true, proxy_protocol_from: #{fronts.inspect}) : ""
    # Corked (TCP_CORK), a small response leaves in one packet: a host taken
    # off the network between two packets of one response fails that
    # request behind any proxy, and the tests that take hosts away count
    # failed requests.
    File.write(File.join(@dir, "unicorn.conf.rb"), <<~CONFIG)
      require "nightmare"
      worker_processes #{workers}
      listen "#{address}", tcp_nopush: true#{marks}
      stderr_path "#{log_path}"
      timeout 30
      #{config}
    CONFIG
    FileUtils.cp(File.join(ROOT, "test", "apps", "probe.ru"), File.join(@dir, "config.ru"))
  end

  def address = "#{@host.address}:#{PORT}"
  def name = "host#{@host.index}"
  def log_path = File.join(@dir, "stderr.log")
  def log = File.exist?(log_path) ? File.read(log_path) : ""

  def start
    @pid = @host.spawn(RbConfig.ruby, UNICORN_BIN, "-c", File.join(@dir, "unicorn.conf.rb"), File.join(@dir, "config.ru"),
                       env: { "RUBYLIB" => File.join(ROOT, "lib"), "RACK_ENV" => "none", "TEST_HOST" => name },
                       chdir: @dir, in: File::NULL, out: File.join(@dir, "stdout.log"), err: File.join(@dir, "launch.log"))
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 20
    until log.scan(/worker=\d+ ready/).size >= @workers
      raise "#{name}'s unicorn did not start:\n#{log}#{File.read(File.join(@dir, 'launch.log'))}" if
        Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep 0.05
    end
    self
  end

  # For a Unicorn with `nightmare true`: its front is up too.
  def wait_for_front
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 20
    sleep 0.05 until log.include?("nightmare front ready") || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
    log.include?("nightmare front ready") or raise "#{name}'s front did not start:\n#{log}"
  end

  # Master and workers die at once, as a machine's processes do when it crashes.
  def kill
    pids = [@pid, *LocalProcesses.children_of(@pid)]
    pids.each do |pid|
      Process.kill(:KILL, pid)
    rescue Errno::ESRCH
      next
    end
  end

  def stop
    if @pid
      begin
        Process.kill(:QUIT, @pid)
        Timeout.timeout(10) { Process.waitpid(@pid) }
      rescue Errno::ESRCH, Errno::ECHILD, Timeout::Error
        kill
      end
    end
  ensure
    FileUtils.rm_rf(@dir) unless ENV["KEEP_TEST_DIRS"]
  end
end

# The front alone (the `nightmare` executable), with +config+ beside its
# listener, log and pid: upstream, backup, map and the rest.
class StandaloneFront
  include WaitsWithLog

  attr_reader :port, :dir, :pid

  def initialize(config)
    @dir = Dir.mktmpdir("nightmare-standalone")
    @port = LocalProcesses.free_port
    write_config(config)
  end

  def config_path = File.join(@dir, "nightmare.conf.rb")
  def log_path = File.join(@dir, "stderr.log")
  def pid_path = File.join(@dir, "nightmare.pid")
  def log = File.exist?(log_path) ? File.read(log_path) : ""

  def write_config(config)
    File.write(config_path, <<~CONFIG)
      listen "127.0.0.1:#{@port}"
      stderr_path "#{log_path}"
      pid "#{pid_path}"
      status_path "#{UnicornServer::STATUS_PATH}"
      #{config}
    CONFIG
  end

  # +wrapper+: a command that execs the executable (keeping the pid);
  # +fds+: descriptors it inherits, as spawn takes them.
  def start(fronts_ready: 1, wrapper: [], fds: {})
    @pid = Process.spawn({ "RUBYLIB" => File.join(ROOT, "lib") }, *wrapper, *command,
                         in: File::NULL, chdir: @dir, out: File.join(@dir, "stdout.log"),
                         err: File.join(@dir, "launch.log"), **fds)
    wait_until("the standalone front", 20) do
      alive? or raise "nightmare exited: #{File.read(File.join(@dir, 'launch.log'))}\n#{log}"
      log.scan("nightmare front ready").size >= fronts_ready
    end
    self
  end

  def command(*options) = [RbConfig.ruby, File.join(ROOT, "bin", "nightmare"), "-c", config_path, *options]

  def alive?
    Process.waitpid(@pid, Process::WNOHANG).nil?
  rescue Errno::ECHILD
    false
  end

  def front_pid = LocalProcesses.children_of(@pid).find { |child| LocalProcesses.cmdline(child).include?("nightmare front") }

  # A master this process did not start (daemonized with -D): #stop waits
  # for it by /proc, and kills what is left of it, even after a failure.
  def adopt(pid)
    @adopted = pid
  end

  def stop
    stop_adopted if @adopted
    return unless @pid

    children = LocalProcesses.children_of(@pid)
    begin
      Process.kill(:QUIT, @pid)
      Timeout.timeout(20) { Process.waitpid(@pid) }
    rescue Errno::ESRCH, Errno::ECHILD
      nil
    rescue Timeout::Error
      Process.kill(:KILL, @pid)
    end
    children.each do |child|
      Process.kill(:KILL, child)
    rescue Errno::ESRCH
      next
    end
    @pid = nil
  ensure
    FileUtils.rm_rf(@dir) unless ENV["KEEP_TEST_DIRS"]
  end

  private

  # Each process is known by its pid and start time, so a pid the system
  # gave to another process since is never signalled.
  def stop_adopted
    tree = [@adopted, *LocalProcesses.children_of(@adopted)].map { |pid| [pid, started_at(pid)] }
    alive = -> { tree.select { |pid, start| start && started_at(pid) == start } }
    [:QUIT, :KILL].each do |signal|
      alive.call.each { |pid, _| Process.kill(signal, pid) rescue nil } # rubocop:disable Style/RescueModifier
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + (signal == :QUIT ? 20 : 5)
      sleep 0.05 while alive.call.any? && Process.clock_gettime(Process::CLOCK_MONOTONIC) < deadline
      break if alive.call.empty?
    end
    @adopted = nil
  end

  def started_at(pid)
    File.read("/proc/#{pid}/stat").split(") ").last.split[19]
  rescue Errno::ENOENT, Errno::ESRCH
    nil
  end
end

# Tests with hosts: made in setup, destroyed in teardown, skipped (saying
# why) where namespaces cannot be made.
module TestHostsHelpers
  def make_hosts(count)
    reason = TestHost.unavailable_because
    skip("#{reason}: tests of fronts before other hosts need them") if reason
    # Each host is kept as it is made, so teardown destroys the ones made
    # before one that failed.
    @hosts = []
    (1..count).each { |index| @hosts << TestHost.new(index) }
  end

  # Each step on its own: a failure in one must not leave the rest (a
  # host's processes would outlive the test and hold its subnet).
  def teardown
    [*@remotes, @front, @server].compact.each do |process|
      process.stop
    rescue StandardError => e
      warn "teardown: #{e.class}: #{e.message}"
    end
  ensure
    (@hosts || []).each(&:destroy)
  end
end
