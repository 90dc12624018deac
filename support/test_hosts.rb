# frozen_string_literal: true

# Hosts for tests and benchmarks of a front in front of Unicorns on other
# machines: each is a network namespace with a veth pair to this one
# (10.77.N.1 here, 10.77.N.2 there), so a Unicorn started in it is reached
# over a network as on another machine, and can vanish from it (its link
# taken down). Needs root and iproute2; tests skip with a clear message
# without them.
class TestHost
  # Why hosts cannot be made here, or nil when they can.
  def self.unavailable_because
    return "network namespaces need root" unless Process.euid.zero?
    return "network namespaces need iproute2's ip" unless system("command -v ip >/dev/null 2>&1")

    probe = "nmprobe#{$$}"
    quiet = { out: File::NULL, err: File::NULL }
    made = system("ip", "netns", "add", probe, **quiet)
    # exec needs "/" to be a mount point (it makes mounts slave), which a
    # plain chroot's is not.
    entered = made && system("ip", "netns", "exec", probe, "true", **quiet)
    system("ip", "netns", "del", probe, **quiet)
    return "this machine refuses `ip netns add`" unless made

    entered ? nil : "this machine refuses `ip netns exec` (in a chroot, \"/\" must be a mount point)"
  end

  NAME = /\Anm(\d+)h\d+\z/

  # Namespaces a test process that is gone left behind (killed before its
  # teardown), with whatever still runs in them: their links would hold
  # the subnets new hosts need.
  def self.clear_stale
    `ip netns list 2>/dev/null`.split("\n").map { |line| line.split.first.to_s }.each do |name|
      owner = name[NAME, 1] or next
      next if owner.to_i == $$ % 100_000 || process_alive?(owner.to_i)

      kill_everything_in(name)
      system("ip", "netns", "del", name, out: File::NULL, err: File::NULL)
    end
    `ip -o link 2>/dev/null`.scan(/^\d+: (nmo\d+x\d+)@/).flatten.each do |link|
      system("ip", "link", "del", link, out: File::NULL, err: File::NULL)
    end
  end

  def self.process_alive?(pid)
    Process.kill(0, pid)
    true
  rescue Errno::ESRCH
    false
  rescue Errno::EPERM
    true
  end

  # Every process that runs in namespace +name+: a test's, whatever it
  # spawned, and theirs (a killed master's workers too).
  def self.kill_everything_in(name)
    `ip netns pids #{name} 2>/dev/null`.split.map(&:to_i).each do |pid|
      Process.kill(:KILL, pid)
    rescue Errno::ESRCH
      next
    end
  end

  attr_reader :index, :name

  # +index+ (1-250) picks the subnet; hosts of one test need distinct ones.
  def initialize(index)
    self.class.clear_stale if index == 1
    @index = index
    @name = "nm#{$$ % 100_000}h#{index}"
    @outer = "nmo#{$$ % 10_000}x#{index}"
    @inner = "nmi#{$$ % 10_000}x#{index}"
    @pids = []
    connect
  rescue StandardError
    destroy # what was made of it, so the next test can use the names
    raise
  end

  # The host's address, and this side's address on its link.
  def address = "10.77.#{@index}.2"
  def near = "10.77.#{@index}.1"

  # Starts +command+ inside the host; its pid (ip netns exec execs it).
  def spawn(*command, env: {}, **options)
    pid = Process.spawn(env, "ip", "netns", "exec", @name, *command, **options)
    @pids << pid
    pid
  end

  # The host drops off the network: its side of the link goes down, and
  # what is sent to it goes unanswered.
  def vanish = inside("ip", "link", "set", @inner, "down")

  def reappear = inside("ip", "link", "set", @inner, "up")

  def destroy
    self.class.kill_everything_in(@name)
    @pids.each do |pid|
      Process.waitpid(pid)
    rescue Errno::ECHILD
      next
    end
    system("ip", "netns", "del", @name, out: File::NULL, err: File::NULL)
    system("ip", "link", "del", @outer, out: File::NULL, err: File::NULL)
  end

  private

  # The namespace, and a veth pair with one end in it.
  def connect
    ip("netns", "add", @name)
    ip("link", "add", @outer, "type", "veth", "peer", "name", @inner)
    ip("link", "set", @inner, "netns", @name)
    ip("addr", "add", "#{near}/24", "dev", @outer)
    ip("link", "set", @outer, "up")
    inside("ip", "addr", "add", "#{address}/24", "dev", @inner)
    inside("ip", "link", "set", @inner, "up")
    inside("ip", "link", "set", "lo", "up")
  end

  def inside(*command) = run("ip", "netns", "exec", @name, *command)
  def ip(*args) = run("ip", *args)

  def run(*command)
    system(*command, out: File::NULL, err: File::NULL) or raise "failed: #{command.join(' ')}"
  end
end
