# frozen_string_literal: true

require_relative "test_helper"

# HUP: Unicorn re-reads its config, and the front follows.
#
# New nightmare settings start a new front that replaces the old one, and
# turning nightmare off hands the listeners back to the workers, without a
# failed request either way. (New certificates alone are loaded by the
# running front: see tls_test.rb.)
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

    served, failures = with_steady_clients do |served_more|
      rewrite_config('nightmare client_max_body_size: "1m"')
      reload_and_wait { @server.log.scan("nightmare front ready").size == 2 && @server.log.include?("nightmare front exited") }
      served_more.call(20)
    end
    assert_operator served, :>, 10, "clients kept coming during the reload"
    assert_equal 0, failures, "no request failed while the front was replaced"
    assert_equal 200, upload.status
    assert_match(/nightmare front pid=\d+ retiring: its settings changed/, @server.log)

    served, failures = with_steady_clients do |served_more|
      rewrite_config("nightmare false")
      reload_and_wait { @server.front_pid.nil? && @server.worker_pids.size == 2 }
      served_more.call(20)
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

  # The status page goes with the front: `nightmare false` drops it too.
  def rewrite_config(directive)
    config = File.read(@server.config_path).gsub(/^nightmare .*$/, directive)
    config = config.gsub(/^status_path .*$/, "") if directive == "nightmare false"
    File.write(@server.config_path, config)
  end

  def reload_and_wait(&done)
    Process.kill(:HUP, @server.pid)
    @server.wait_until("the reload", 20, &done)
  end
end

# Unicorn re-creates a UNIX listener whose file is gone on HUP: the front
# must follow the new socket, not the old one of the same name.
class UnixListenerReloadTest < Minitest::Test
  include HttpHelpers

  def teardown
    @server&.stop
  end

  def test_a_unix_listener_recreated_on_hup_is_served
    public_path = File.join(Dir.mktmpdir("nightmare-public"), "public.sock")
    @server = UnicornServer.new(workers: 1, config: %(listen "#{public_path}")).start
    assert_equal 200, unix_get(public_path).status
    File.unlink(public_path)
    Process.kill(:HUP, @server.pid)
    @server.wait_until("a front for the new socket", 10) { @server.log.scan("nightmare front ready").size == 2 }
    assert_match(/retiring: the listeners changed/, @server.log)
    assert_equal 200, unix_get(public_path).status
  ensure
    FileUtils.rm_rf(File.dirname(public_path)) if public_path
  end

  private

  def unix_get(path)
    socket = UNIXSocket.new(path)
    socket.write("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    read_response(socket, 5)
  ensure
    socket&.close
  end
end

# A broken config on HUP keeps the running one, as in Unicorn.
class BadReloadTest < Minitest::Test
  include HttpHelpers

  def test_a_bad_nightmare_setting_on_hup_keeps_the_old_config
    @server = UnicornServer.new(workers: 1).start
    front = @server.front_pid
    File.write(@server.config_path, File.read(@server.config_path).sub(/^nightmare .*$/, 'nightmare threads: "many"'))
    Process.kill(:HUP, @server.pid)
    @server.wait_until("the reload error", 10) { @server.log.include?("error reloading config_file") }
    assert_match(/not an integer: nightmare threads="many"/, @server.log)
    assert_equal front, @server.front_pid, "the front runs on"
    assert_equal 200, get("/").status
  ensure
    @server&.stop
  end
end
