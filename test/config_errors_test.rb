# frozen_string_literal: true

require_relative "test_helper"

# A wrong setting stops Unicorn at load time, naming the directive.
class ConfigErrorTest < Minitest::Test
  CASES = {
    'nightmare client_max_body_size: "10x"' => /not a size: nightmare client_max_body_size="10x"/,
    "nightmare threads: 0" => /too low \(< 1\): nightmare threads=0/,
    'nightmare client_header_timeout: "soon"' => /not a time: nightmare client_header_timeout="soon"/,
    "nightmare bogus: 1" => /nightmare: unknown setting :bogus \(known: threads,/,
    "nightmare cleint_max_body_size: '1m'" =>
      /nightmare: unknown setting :cleint_max_body_size; did you mean client_max_body_size\? \(known: threads,/,
    'nightmare temp_path: "/no/such/dir"' => %r{nightmare temp_path="/no/such/dir" is not a writable directory},
    'nightmare "yes"' => /nightmare="yes": use true, false, or a Hash of settings/,
    "nightmare true\nworker_exec true" => /nightmare cannot run with worker_exec true/,
    "nightmare queue_timeout: Float::INFINITY" => /too long \(> 1 day, 86400s\): nightmare queue_timeout=Infinity/,
    "nightmare send_timeout: 1e19" => /too long \(> 1 day, 86400s\): nightmare send_timeout=1.0e\+19/,
    "nightmare true\nstatus_path 'status'" => /status_path "status": give a path like "\/_nightmare"/,
    "nightmare true\nstatus_path '/s', allow: ['everyone']" => /status_path allow: "everyone" is not an IP address/,
    "status_path '/s'" => /status_path needs the front/,
    "backup '10.0.0.2:8080'" => /backup, upstream and map need the front: add `nightmare true`/,
    "nightmare true\nupstream '10.0.0.2:8080'" => /upstream: in a Unicorn config the master's own workers are the upstream/,
    "nightmare true\nbackup '10.0.0.2'" => /upstream "10.0.0.2": give host:port \("10.0.0.2:8080"\) or "unix:\/path"/,
    "nightmare true\nbackup 'no-such-host.invalid:80'" => /upstream "no-such-host.invalid:80": cannot resolve/,
    "nightmare true\nbackup '10.0.0.2:80', max_conns: -1" => /backup max_conns=-1: give a count/,
    "nightmare true\nbackup '10.0.0.2:80', weight: 2" => /backup: unknown option :weight \(known: max_conns,/,
    "nightmare true\nbackup '10.0.0.2:80', fail_timeout: 'soon'" => /not a time: nightmare backup fail_timeout="soon"/,
    "nightmare true\nmap 'a b' => '10.0.0.2:80'" => /map "a b": give a host name/,
    "listen '127.0.0.1:0', proxy_protocol: true" => /proxy_protocol: true needs proxy_protocol_from/,
    "listen '/tmp/nightmare-test.sock', proxy_protocol: true, proxy_protocol_from: ['10.0.0.1']" =>
      %r{listen /tmp/nightmare-test.sock proxy_protocol: only for TCP listeners},
    # A Unicorn whose workers take clients some third way is refused, not
    # left to spin on an error in every worker.
    "Unicorn::HttpServer.class_eval { def process_client(a, b, c); end }\nnightmare true" =>
      /nightmare: this Unicorn \(.*\) reads requests in a way the gem does not know: HttpServer#process_client takes 3/,
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
