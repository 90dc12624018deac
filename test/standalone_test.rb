# frozen_string_literal: true

require_relative "test_helper"
require_relative "support/remote_unicorn"
require "etc"

# The front alone (the `nightmare` executable) in front of Unicorns on
# other hosts (network namespaces): requests shared among them, the real
# client's address on every one through PROXY v2, routes by Host, and
# Unicorn's signals, daemonizing and socket activation on its master.
class StandaloneTest < Minitest::Test
  include HttpHelpers
  include TestHostsHelpers

  def test_two_remote_unicorns_both_serve_with_the_clients_address
    make_hosts(2)
    @remotes = @hosts.map { |host| RemoteUnicorn.new(host).start }
    @server = StandaloneFront.new(%(upstream "#{@remotes[0].address}", "#{@remotes[1].address}", proxy_protocol: true)).start
    answers = Array.new(12) { Thread.new { get("/host", {}, bind: "127.0.0.9") } }.map(&:value)
    assert(answers.all? { |response| response.status == 200 }, answers.map(&:status).inspect)
    assert_equal %w[host1 host2], answers.map(&:body).uniq.sort, "both hosts take a share"
    # One after another, the host that has taken fewer goes next: the
    # twelve above may have left one ahead by up to twelve.
    envs = Array.new(16) { get("/env", {}, bind: "127.0.0.9").json }
    assert_equal %w[host1 host2], envs.map { |env| env["host"] }.uniq.sort
    envs.each { |env| assert_equal "127.0.0.9", env["REMOTE_ADDR"], "#{env['host']} sees the client, not the front" }
    assert_match(/nightmare front ready: \d+ threads on 127\.0\.0\.1:#{@server.port}, 2 upstream servers/, @server.log)
  end

  def test_a_plain_upstream_gets_the_clients_address_in_x_forwarded_for
    make_hosts(1)
    @remotes = [RemoteUnicorn.new(@hosts[0], proxy_protocol: false).start]
    @server = StandaloneFront.new(%(upstream "#{@remotes[0].address}")).start
    env = get("/env", { "X-Forwarded-For" => "6.6.6.6" }, bind: "127.0.0.9").json
    assert_equal "127.0.0.9", env["HTTP_X_FORWARDED_FOR"], "the front's, the client's own claim removed"
    assert_equal "http", env["HTTP_X_FORWARDED_PROTO"]
    assert_equal @hosts[0].near, env["REMOTE_ADDR"], "the connection is the front's"
  end

  def test_a_stranger_cannot_claim_an_address_on_a_proxy_protocol_listener
    make_hosts(1)
    # The listener takes fronts at 10.77.1.99 only; this process connects from 10.77.1.1.
    @remotes = [RemoteUnicorn.new(@hosts[0], fronts: ["10.77.1.99"]).start]
    stranger = TCPSocket.new(@hosts[0].address, RemoteUnicorn::PORT)
    stranger.write("\r\n\r\n\0\r\nQUIT\n!\x11\x00\x0c\x01\x02\x03\x04\x00\x00\x00\x00\x00\x01\x00\x00" \
                   "GET /count HTTP/1.1\r\nHost: t\r\n\r\n")
    assert stranger.wait_readable(5), "the host drops the stranger"
    assert_equal "", (stranger.read rescue ""), "and answers nothing" # rubocop:disable Style/RescueModifier
    wait_for_log = -> { @remotes[0].log.include?("dropped a connection from #{@hosts[0].near} to a proxy_protocol listener") }
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 5
    sleep 0.05 until wait_for_log.call || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
    assert wait_for_log.call, @remotes[0].log
  ensure
    stranger&.close
  end

  def test_host_map_routes_by_name_and_an_unmapped_host_without_default_gets_421
    make_hosts(3)
    @remotes = @hosts.map { |host| RemoteUnicorn.new(host, workers: 1).start }
    config = <<~CONFIG
      upstream "#{@remotes[0].address}", proxy_protocol: true
      map "admin.example.com" => "#{@remotes[1].address}", "*.api.example.com" => ["#{@remotes[2].address}"],
          proxy_protocol: true
    CONFIG
    @server = StandaloneFront.new(config).start
    assert_equal "host2", host_for("Admin.Example.com:8443").body
    assert_equal "host3", host_for("v1.api.example.com").body
    assert_equal "host1", host_for("www.example.com").body, "the default group"
    assert_equal "host1", host_for("api.example.com").body, "*. takes subdomains only"
    @server.stop

    @server = StandaloneFront.new(%(map "admin.example.com" => "#{@remotes[1].address}", proxy_protocol: true)).start
    refused = host_for("www.example.com")
    assert_equal 421, refused.status, "no server here answers for that name"
    assert_equal "host2", host_for("admin.example.com").body
  end

  def test_unicorns_signals_work_on_the_executable
    make_hosts(2)
    @remotes = @hosts.map { |host| RemoteUnicorn.new(host, workers: 1).start }
    @server = StandaloneFront.new(%(upstream "#{@remotes[0].address}", proxy_protocol: true)).start
    assert File.exist?(@server.pid_path), "pid written"
    assert_equal Integer(File.read(@server.pid_path)), @server.pid

    # HUP: a new upstream list, under a client loop with no failed request.
    served, failures = with_steady_clients(@server.port) do |served_more|
      @server.write_config(%(upstream "#{@remotes[1].address}", proxy_protocol: true))
      Process.kill(:HUP, @server.pid)
      @server.wait_until("the new front", 20) { @server.log.scan("nightmare front ready").size >= 2 }
      served_more.call(20)
    end
    assert_equal 0, failures, "no request failed while the upstreams changed"
    assert_operator served, :>, 20
    assert_equal "host2", get("/host").body, "the new list is in use"

    # USR1: logs reopened, the front's too.
    Process.kill(:USR1, @server.pid)
    @server.wait_until("the front to reopen its logs", 10) { @server.log.include?("nightmare front: log files reopened") }

    # QUIT: a request in progress is answered, then everything exits.
    held = Thread.new { get("/sleep?1", {}, timeout: 15) }
    @server.wait_until("the request in the front", 5) { figures(@server)["upstream_in_flight"] == 1 }
    Process.kill(:QUIT, @server.pid)
    assert_equal 200, held.value.status, "finished after QUIT"
    Timeout.timeout(20) { Process.waitpid(@server.pid) }
    refute File.exist?(@server.pid_path), "pid file removed"
    @server.instance_variable_set(:@pid, nil)
  end

  def test_an_upstream_slow_to_answer_gets_the_client_a_504
    make_hosts(1)
    @remotes = [RemoteUnicorn.new(@hosts[0], workers: 1).start]
    @server = StandaloneFront.new(<<~CONFIG).start
      nightmare upstream_read_timeout: 1
      upstream "#{@remotes[0].address}", proxy_protocol: true
    CONFIG
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    response = get("/sleep?3", {}, timeout: 10)
    assert_equal 504, response.status
    assert_operator Process.clock_gettime(Process::CLOCK_MONOTONIC) - started, :<, 2.5, "after upstream_read_timeout"
    @server.wait_until("the log line", 5) { @server.log.include?("sent no response head within upstream_read_timeout (1s)") }
  end

  def test_usr2_then_quit_of_the_old_master_and_term_on_the_executable
    make_hosts(1)
    @remotes = [RemoteUnicorn.new(@hosts[0]).start]
    @server = StandaloneFront.new(%(upstream "#{@remotes[0].address}", proxy_protocol: true)).start
    old_master = @server.pid
    new_master = nil
    served, failures = with_steady_clients(@server.port) do |served_more|
      Process.kill(:USR2, old_master)
      @server.wait_until("the new master and its front", 30) do
        new_master = Integer(File.read(@server.pid_path)) rescue nil # rubocop:disable Style/RescueModifier
        new_master && new_master != old_master && @server.log.scan("nightmare front ready").size >= 2
      end
      served_more.call(20)
      Process.kill(:QUIT, old_master)
      Timeout.timeout(30) { Process.waitpid(old_master) }
      served_more.call(20)
    end
    assert_equal 0, failures, "no request failed through USR2 and the old master's QUIT"
    assert_operator served, :>, 40
    assert_equal "host1", get("/host").body, "the new generation serves"

    Process.kill(:TERM, new_master)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 10
    sleep 0.05 while File.exist?("/proc/#{new_master}") && Process.clock_gettime(Process::CLOCK_MONOTONIC) < deadline
    refute File.exist?("/proc/#{new_master}"), "TERM: gone at once"
    @server.instance_variable_set(:@pid, nil)
  end

  def test_the_executable_daemonizes_with_dash_d_and_its_front_runs_as_user
    make_hosts(1)
    @remotes = [RemoteUnicorn.new(@hosts[0]).start]
    @server = StandaloneFront.new(%(upstream "#{@remotes[0].address}", proxy_protocol: true\nuser "nobody"))
    launcher = Process.spawn({ "RUBYLIB" => File.join(ROOT, "lib") }, *@server.command("-D"),
                             in: File::NULL, out: File::NULL, err: File.join(@server.dir, "launch.log"))
    Timeout.timeout(30) { Process.waitpid(launcher) }
    assert $?.success?, "the launcher returns once the daemon runs: #{@server.log}"
    daemon = Integer(File.read(@server.pid_path))
    @server.adopt(daemon) # stopped by teardown, whatever fails below
    refute_equal launcher, daemon, "a process of its own"
    @server.wait_until("the daemon's front", 20) { @server.log.include?("nightmare front ready") }
    assert_equal "host1", get("/host").body
    front = LocalProcesses.children_of(daemon).find { |child| LocalProcesses.cmdline(child).include?("nightmare front") }
    uid = File.read("/proc/#{front}/status")[/^Uid:\s+(\d+)/, 1]
    assert_equal Etc.getpwnam("nobody").uid, Integer(uid), "the front dropped root for `user`"

    Process.kill(:QUIT, daemon)
    @server.wait_until("the daemon to exit", 20) { !File.exist?("/proc/#{daemon}") }
    refute File.exist?(@server.pid_path), "pid file removed"
  end

  # systemd's socket activation: the listener comes as fd 3, LISTEN_FDS=1
  # and LISTEN_PID naming the process, which then binds nothing itself.
  def test_the_executable_takes_a_listener_from_systemd
    make_hosts(1)
    @remotes = [RemoteUnicorn.new(@hosts[0]).start]
    @server = StandaloneFront.new(%(upstream "#{@remotes[0].address}", proxy_protocol: true))
    activated = TCPServer.new("127.0.0.1", @server.port)
    systemd = ["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1; export LISTEN_PID LISTEN_FDS; exec "$@"', "systemd"]
    @server.start(wrapper: systemd, fds: { 3 => activated })
    activated.close
    assert_match(/inherited addr=127\.0\.0\.1:#{@server.port} fd=3/, @server.log)
    assert_equal "host1", get("/host").body, "served on the inherited listener"
  end

  def test_a_config_without_upstreams_is_refused
    @server = StandaloneFront.new("")
    output = IO.popen({ "RUBYLIB" => File.join(ROOT, "lib") },
                      [RbConfig.ruby, File.join(ROOT, "bin", "nightmare"), "-c", @server.config_path,
                       err: %i[child out]], &:read)
    refute $?.success?
    assert_match(/needs somewhere to send requests: give `upstream "host:port"`/, output + @server.log)
  end

  private

  # Which host answers a request for +name+.
  def host_for(name) = raw_request("GET /host HTTP/1.1\r\nHost: #{name}\r\n\r\n")
end
