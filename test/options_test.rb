# frozen_string_literal: true

require_relative "test_helper"
require_relative "../support/readme_settings"
$LOAD_PATH.unshift(File.join(ROOT, "lib"))
require "nightmare"

# The nightmare directive's settings, read by the front's own table without
# starting anything: defaults, the forms a value may take, the messages a
# bad one gets, and the README's table made from the same table.
class OptionsTest < Minitest::Test
  def test_every_setting_has_a_default_and_given_ones_are_read_in_bytes_and_seconds
    defaults = Nightmare::Options.new({})
    assert_equal 1024**3, defaults[:client_max_body_size]
    assert_equal 60.0, defaults[:client_header_timeout]
    assert_equal [4, 8192], defaults[:large_client_header_buffers]
    assert_equal "auto", defaults[:temp_path_max_size]
    assert_equal Etc.nprocessors, defaults[:threads]
    assert_equal "off", defaults[:access_log]
    assert_match(/\A\$remote_addr - \$remote_user \[\$time_local\] .* \$request_time \$queue_time\z/,
                 defaults[:access_log_format])

    options = Nightmare::Options.new({ client_max_body_size: "10m", send_timeout: "1.5m", "keepalive_timeout" => 5,
                                       temp_path: ".", max_connections_per_address: 7 })
    assert_equal 10 * 1024**2, options[:client_max_body_size]
    assert_equal 90.0, options[:send_timeout]
    assert_equal 5.0, options[:keepalive_timeout], "a String key is a setting too"
    assert_equal Dir.pwd, options[:temp_path], "made absolute"
    assert_equal 7, options[:max_connections_per_address]
  end

  def test_two_spellings_of_the_same_settings_are_equal
    assert_equal Nightmare::Options.new({ client_body_timeout: 60, proxy_buffer_size: 32_768 }),
                 Nightmare::Options.new({ client_body_timeout: "1m", proxy_buffer_size: "32k" })
    refute_equal Nightmare::Options.new({}), Nightmare::Options.new({ threads: Etc.nprocessors + 1 })
  end

  def test_the_block_form_reads_like_the_hash_form
    from_block = Nightmare::Options.from_directive(true) do
      client_max_body_size "5m"
      threads 2
    end
    assert_equal Nightmare::Options.new({ client_max_body_size: "5m", threads: 2 }), from_block
    error = assert_raises(ArgumentError) { Nightmare::Options.from_directive(true) { bogus_setting 1 } }
    assert_match(/nightmare: unknown setting :bogus_setting \(known: threads,/, error.message)
  end

  def test_bad_values_are_refused_with_the_setting_and_the_fix
    {
      { client_max_body_size: "10x" } => 'not a size: nightmare client_max_body_size="10x" (give bytes as an ' \
                                         'Integer, or a String like "512k", "10m", "1g")',
      { threads: 0 } => "too low (< 1): nightmare threads=0",
      { threads: "many" } => 'not an integer: nightmare threads="many"',
      { client_header_timeout: "soon" } => 'not a time: nightmare client_header_timeout="soon" (give seconds ' \
                                           'as a Number, or a String like "500ms", "30s", "5m")',
      { queue_timeout: Float::INFINITY } => "too long (> 1 day, 86400s): nightmare queue_timeout=Infinity",
      { send_timeout: -1 } => "must be positive: nightmare send_timeout=-1",
      { temp_path: "/no/such/dir" } => 'nightmare temp_path="/no/such/dir" is not a writable directory',
      { large_client_header_buffers: 4 } => 'nightmare large_client_header_buffers=4: give [count, size], ' \
                                            'like [4, "8k"]',
      { temp_path_max_size: "lots" } => 'not a size or "auto": nightmare temp_path_max_size="lots"',
      { max_connections_per_address: "some" } => 'not an integer: nightmare max_connections_per_address="some" ' \
                                                 '(or "auto")',
      { access_log_format: "$remote_addr $bogus" } => "access_log_format: unknown variable $bogus (known: remote_addr,",
      { access_log: "/no/such/dir/access.log" } => 'nightmare access_log="/no/such/dir/access.log" is not a file ' \
                                                   "that can be written (or created)",
      { http2_cleartext: "maybe" } => 'not a switch: nightmare http2_cleartext="maybe" (give true or false)',
      { bogus: 1 } => "nightmare: unknown setting :bogus (known: threads, client_header_timeout,"
    }.each do |given, message|
      error = assert_raises(ArgumentError, given.inspect) { Nightmare::Options.new(given) }
      assert_includes error.message, message, given.inspect
    end
  end

  # The examples users copy: loaded as they are (addresses resolved,
  # settings read), the standalone one as the executable loads it.
  def test_upstream_options_read_as_nginx_writes_them
    upstreams = Nightmare::Upstreams.new
    upstreams.add_backups("backup", ["10.0.0.2:8080"], { fail_timeout: "0s" })
    upstreams.add_backups("backup", ["10.0.0.3:8080"], { fail_timeout: 0, max_conns: 2 })
    upstreams.add_backups("backup", ["10.0.0.4:8080"], { fail_timeout: "30s" })
    assert_equal [0.0, 0.0, 30.0], upstreams.backups.map { |server| server.options[:fail_timeout] }
    assert_equal [0, 2, 0], upstreams.backups.map { |server| server.options[:max_conns] }
  end

  def test_the_example_configs_load
    { "unicorn.conf.rb" => false, "nightmare.conf.rb" => true }.each do |name, standalone|
      path = File.join(ROOT, "examples", name)
      config = Unicorn::Configurator.new(config_file: path, use_defaults: true, nightmare_standalone: standalone)
      assert_kind_of Nightmare::Options, config.set[:nightmare], name
      next unless standalone

      upstreams = config.set[:upstreams]
      assert_equal 2, upstreams.primaries.size
      assert_equal [["admin.example.com", ["10.0.0.9:8080"]]], upstreams.routes.map { |host, list| [host, list.map(&:address)] }
    end
  end

  # The README's single-server example, with its directories made here.
  def test_the_internet_facing_example_loads
    Dir.mktmpdir("nightmare-example") do |dir|
      FileUtils.mkdir_p([File.join(dir, "srv/app/current/public"), File.join(dir, "srv/app/shared/private")])
      File.write(File.join(dir, "srv/app/current/public/503.html"), "<p>back soon</p>\n")
      text = File.read(File.join(ROOT, "examples", "internet.unicorn.conf.rb"))
      path = File.join(dir, "internet.unicorn.conf.rb")
      File.write(path, text.gsub("/srv/app", File.join(dir, "srv/app")).gsub("/var/lib/nightmare", dir))
      config = Unicorn::Configurator.new(config_file: path, use_defaults: true)
      tls = config.set[:listener_opts]["0.0.0.0:443"][:ssl_opts]
      assert_equal [%w[example.com www.example.com]], tls.acme.certificates
      assert tls.redirect
      assert_equal File.join(dir, "acme"), tls.acme.state_path
      assert_equal 0o700, File.stat(tls.acme.state_path).mode & 0o777
    end
  end

  def test_the_readmes_table_of_settings_is_the_fronts
    reference = File.read(File.join(ROOT, "docs", "configuration.md"))
    assert ReadmeSettings.current(reference), "docs/configuration.md marks its table of settings"
    assert_equal ReadmeSettings.section, ReadmeSettings.current(reference),
                 "docs/configuration.md's table of settings is out of date: run `bundle exec rake readme`"
  end
end
