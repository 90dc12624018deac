# frozen_string_literal: true

require_relative "test_helper"
require "etc"

# The rest of what Unicorn users rely on, with the front in place: systemd
# socket activation, fork hooks, `user`, every kind of listener.
class SocketActivationTest < Minitest::Test
  include HttpHelpers

  # systemd passes listening sockets from fd 3 with LISTEN_FDS and
  # LISTEN_PID; Unicorn takes them, and so does the front.
  def test_listeners_passed_by_systemd_are_served_through_the_front
    @server = UnicornServer.new(workers: 1)
    config = File.read(@server.config_path).sub(/^listen .*$/, "")
    File.write(@server.config_path, config)
    listener = TCPServer.new("127.0.0.1", 0)
    port = listener.addr[1]
    command = "LISTEN_FDS=1 LISTEN_PID=$$ exec #{RbConfig.ruby} #{UNICORN_BIN} -c #{@server.config_path} config.ru"
    pid = Process.spawn({ "RUBYLIB" => File.join(ROOT, "lib"), "RACK_ENV" => "none" }, "sh", "-c", command,
                        3 => listener, chdir: @server.dir, err: File.join(@server.dir, "launch.log"))
    listener.close
    @server.adopt_child(pid)
    @server.wait_until("unicorn on systemd's socket", 20) { @server.ready? }
    assert_match(/inherited addr=127\.0\.0\.1:#{port} fd=3/, @server.log)
    env = get("/env", {}, port: port).json
    assert_equal "127.0.0.1", env["REMOTE_ADDR"]
    refute_nil env["HTTP_X_REQUEST_START"], "answered through the front"
  ensure
    @server&.stop
  end
end

class HooksTest < Minitest::Test
  include HttpHelpers

  def test_fork_hooks_run_for_workers_and_never_for_the_front
    hooks_log = File.join(Dir.tmpdir, "nightmare-hooks-#{$$}.log")
    @server = UnicornServer.new(workers: 2, config: <<~CONFIG).start
      before_fork { |server, worker| File.write(#{hooks_log.inspect}, "before_fork \#{worker.nr}\\n", mode: "a") }
      after_fork { |server, worker| File.write(#{hooks_log.inspect}, "after_fork \#{worker.nr} \#{$$}\\n", mode: "a") }
      after_worker_ready do |server, worker|
        server.logger.info("worker=\#{worker.nr} ready") # what the test harness waits for
        File.write(#{hooks_log.inspect}, "ready \#{worker.nr}\\n", mode: "a")
      end
      after_worker_exit { |server, worker, status| File.write(#{hooks_log.inspect}, "exit \#{worker&.nr.inspect}\\n", mode: "a") }
    CONFIG
    @server.wait_until("both workers' hooks", 10) { File.read(hooks_log).scan(/^ready/).size == 2 }
    Process.kill(:KILL, @server.front_pid)
    @server.wait_until("the front's replacement", 10) { @server.log.scan("nightmare front ready").size == 2 }
    lines = File.read(hooks_log).lines.map(&:chomp)
    assert_equal ["before_fork 0", "before_fork 1"], lines.grep(/^before_fork/).sort
    assert_equal %w[0 1], lines.grep(/^after_fork/).map { |line| line.split[1] }.sort
    refute(lines.grep(/^after_fork/).any? { |line| line.split[2].to_i == @server.front_pid }, "no hook ran in the front")
    assert_empty lines.grep(/^exit/), "the front's death is not a worker's exit"
  ensure
    @server&.stop
    File.delete(hooks_log) if hooks_log && File.exist?(hooks_log)
  end
end

class UserTest < Minitest::Test
  include HttpHelpers

  def test_user_drops_privileges_in_the_front_and_the_workers
    skip "needs root to change users" unless Process.euid.zero?
    nobody = Etc.getpwnam("nobody")
    @server = UnicornServer.new(workers: 1, config: %(user "nobody", "#{Etc.getgrgid(nobody.gid).name}"))
    FileUtils.chmod(0o755, @server.dir)
    @server.start
    [@server.front_pid, *@server.worker_pids].each do |pid|
      assert_equal nobody.uid, File.read("/proc/#{pid}/status")[/^Uid:\s+(\d+)/, 1].to_i, "pid #{pid} runs as nobody"
    end
    body = "u" * 200_000 # larger than client_body_buffer_size: a temp file, written as nobody
    response = raw_request("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: #{body.bytesize}\r\n\r\n#{body}")
    assert_equal "#{body.bytesize} #{Digest::SHA256.hexdigest(body)}", response.body
  ensure
    @server&.stop
  end
end

# Listeners of every kind Unicorn has, and preload_app, work with the front.
class ListenersTest < Minitest::Test
  include HttpHelpers

  def test_ipv4_ipv6_and_unix_listeners_at_once_with_preload_app
    ipv6_port = LocalProcesses.free_port
    socket_path = File.join(Dir.tmpdir, "nightmare-test-#{$$}.sock")
    @server = UnicornServer.new(workers: 1, config: <<~CONFIG).start
      listen "[::1]:#{ipv6_port}"
      listen "#{socket_path}"
      preload_app true
    CONFIG
    assert_equal "127.0.0.1", get("/env").json["REMOTE_ADDR"]

    ipv6 = Socket.tcp("::1", ipv6_port)
    ipv6.write("GET /env HTTP/1.1\r\nHost: t\r\n\r\n")
    assert_equal "::1", read_response(ipv6).json["REMOTE_ADDR"]

    unix = UNIXSocket.new(socket_path)
    unix.write("GET /env HTTP/1.1\r\nHost: t\r\n\r\n")
    assert_equal "127.0.0.1", read_response(unix).json["REMOTE_ADDR"], "as Unicorn reports UNIX clients"
    assert_match(/nightmare front ready: \d+ threads on .*\[::1\]:#{ipv6_port}.*#{Regexp.escape(socket_path)}/, @server.log)
  ensure
    ipv6&.close
    unix&.close
    @server&.stop
  end
end
