# frozen_string_literal: true

require_relative "test_helper"

# The master looks after the front as it looks after workers.
class SupervisionTest < Minitest::Test
  include TwoWorkerServer

  def test_killed_front_is_replaced_and_clients_wait_in_the_backlog
    old_front = @server.front_pid
    assert_equal 200, get("/").status
    Process.kill(:KILL, old_front)
    # Connected while no front runs: the kernel's backlog holds the client.
    response = get("/", {}, timeout: 15)
    assert_equal 200, response.status
    new_front = @server.front_pid
    refute_nil new_front
    refute_equal old_front, new_front
    assert_match(/nightmare front died: .*pid #{old_front} SIGKILL.*starting a new one/, @server.log)
    @server.wait_until("the new front's ready line", 5) { @server.log.scan("nightmare front ready").size == 2 }
    refute_match(/worker=unknown/, @server.log, "the front's death is not reported as a worker's")
  end

  def test_a_worker_respawned_while_the_front_restarts_still_goes_through_the_front
    # A front that dies within a second of starting is restarted after a
    # pause; a worker forked in that pause must not serve the listeners.
    Process.kill(:KILL, @server.front_pid)
    @server.wait_until("a fresh front", 10) { @server.log.scan("nightmare front ready").size == 2 }
    front = @server.front_pid # less than a second old: its death counts as quick
    old_worker = @server.worker_pids.first
    Process.kill(:KILL, front)
    Process.kill(:KILL, old_worker)
    @server.wait_until("the worker's replacement", 10) do
      @server.worker_pids.size == 2 && !@server.worker_pids.include?(old_worker)
    end
    @server.worker_pids.each do |worker|
      assert_equal 0, listening_sockets(worker), "worker #{worker} holds a public listener"
    end
    @server.wait_until("the new front", 10) { @server.front_pid && @server.front_pid != front }
    assert_equal 200, get("/").status
  end

  def test_front_and_workers_exit_when_their_master_is_gone
    front = @server.front_pid
    workers = @server.worker_pids
    Process.kill(:KILL, @server.pid)
    Process.waitpid(@server.pid)
    @server.wait_until("front to exit after its master", 10) { !File.exist?("/proc/#{front}") }
    # Unicorn's workers notice too (their pipe from the master closes): the
    # front must not be holding that pipe open.
    running = -> { workers.select { |pid| File.exist?("/proc/#{pid}") && !File.read("/proc/#{pid}/stat").include?(") Z ") } }
    @server.wait_until("workers to exit after their master", 30) { running.call.empty? }
    refute File.exist?("/proc/#{front}"), "the front is gone"
    assert_empty running.call, "the workers are gone"
  ensure
    workers&.each { |pid| Process.kill(:KILL, pid) rescue nil } # rubocop:disable Style/RescueModifier
  end

  def listening_sockets(pid)
    listening = File.readlines("/proc/net/tcp").filter_map { |line| (f = line.split)[3] == "0A" && f[9] }
    Dir.glob("/proc/#{pid}/fd/*").count do |fd|
      listening.include?(File.readlink(fd)[/\Asocket:\[(\d+)\]\z/, 1])
    rescue Errno::ENOENT
      false
    end
  end

  def test_front_logs_through_unicorns_logger
    log = @server.log
    assert_match(/INFO -- : nightmare front spawned pid=\d+/, log)
    assert_match(/INFO -- : nightmare front ready: \d+ threads on 127\.0\.0\.1:#{@server.port}, 2 workers/, log)
  end
end

# A wrong setting stops Unicorn at load time, naming the directive.
class ConfigErrorTest < Minitest::Test
  CASES = {
    'nightmare client_max_body_size: "10x"' => /not a size: nightmare client_max_body_size="10x"/,
    "nightmare threads: 0" => /too low \(< 1\): nightmare threads=0/,
    'nightmare client_header_timeout: "soon"' => /not a time: nightmare client_header_timeout="soon"/,
    "nightmare bogus: 1" => /nightmare: unknown setting :bogus \(known: threads,/,
    'nightmare temp_path: "/no/such/dir"' => %r{nightmare temp_path="/no/such/dir" is not a writable directory},
    'nightmare "yes"' => /nightmare="yes": use true, false, or a Hash of settings/,
    "nightmare true\nworker_exec true" => /nightmare cannot run with worker_exec true/,
    "nightmare queue_timeout: Float::INFINITY" => /too long \(> 1 day, 86400s\): nightmare queue_timeout=Infinity/,
    "nightmare send_timeout: 1e19" => /too long \(> 1 day, 86400s\): nightmare send_timeout=1.0e\+19/,
    "nightmare true\nstatus_path 'status'" => /status_path "status": give a path like "\/_nightmare"/,
    "nightmare true\nstatus_path '/s', allow: ['everyone']" => /status_path allow: "everyone" is not an IP address/,
    "status_path '/s'" => /status_path needs the front/,
  }.freeze

  def test_bad_settings_fail_at_load_with_a_clear_message
    CASES.each do |directive, message|
      Dir.mktmpdir do |dir|
        File.write(File.join(dir, "unicorn.conf.rb"), "require 'nightmare'\nlisten '127.0.0.1:0'\n#{directive}\n")
        File.write(File.join(dir, "config.ru"), "run ->(_) { [200, {}, []] }\n")
        output = IO.popen({ "RUBYLIB" => File.join(ROOT, "lib") },
                          [RbConfig.ruby, UNICORN_BIN, "-c", "unicorn.conf.rb", "config.ru", err: %i[child out]],
                          chdir: dir, &:read)
        refute $?.success?, "#{directive} must stop unicorn"
        assert_match(/ArgumentError/, output, directive)
        assert_match(message, output, directive)
      end
    end
  end
end

# HUP re-reads the nightmare settings: a front with new settings replaces
# the old one, and turning nightmare off hands the listeners back to the
# workers, without a failed request either way.
class ReloadTest < Minitest::Test
  include HttpHelpers

  def setup
    @server = UnicornServer.new(workers: 2, nightmare: "", config: 'nightmare client_max_body_size: "64k"').start
    @body = "b" * 100_000
  end

  def teardown
    @server.stop
  end

  def test_reload_applies_new_settings_then_turns_the_front_off
    assert_equal 413, upload.status

    served, failures = with_steady_clients do
      rewrite_config('nightmare client_max_body_size: "1m"')
      reload_and_wait { @server.log.scan("nightmare front ready").size == 2 && @server.log.include?("nightmare front exited") }
    end
    assert_operator served, :>, 10, "clients kept coming during the reload"
    assert_equal 0, failures, "no request failed while the front was replaced"
    assert_equal 200, upload.status
    assert_match(/nightmare front pid=\d+ retiring: its settings changed/, @server.log)

    served, failures = with_steady_clients do
      rewrite_config("nightmare false")
      reload_and_wait { @server.front_pid.nil? && @server.worker_pids.size == 2 }
    end
    assert_operator served, :>, 10, "clients kept coming during the reload"
    assert_equal 0, failures, "no request failed while the front was retired"
    assert_nil get("/env").json["HTTP_X_REQUEST_START"], "workers answer directly again"
  end

  def test_a_listener_added_on_reload_is_served_through_a_new_front
    port = LocalProcesses.free_port
    File.write(@server.config_path, File.read(@server.config_path) + "listen \"127.0.0.1:#{port}\"\n")
    Process.kill(:HUP, @server.pid)
    @server.wait_until("a front for the new listener", 20) do
      @server.log.include?("retiring: the listeners changed") && @server.log.scan("nightmare front ready").size == 2
    end
    env = get("/env", {}, port: port).json
    refute_nil env["HTTP_X_REQUEST_START"], "the new port is served through the front"
    assert_equal 200, get("/").status, "and the old one still is"
  end

  private

  def upload
    raw_request("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: #{@body.bytesize}\r\n\r\n#{@body}")
  end

  def rewrite_config(directive)
    config = File.read(@server.config_path).gsub(/^nightmare .*$/, directive)
    File.write(@server.config_path, config)
  end

  def reload_and_wait(&done)
    Process.kill(:HUP, @server.pid)
    @server.wait_until("the reload", 20, &done)
    sleep 0.5 # and a little after it
  end
end
